//! Resident memory of a process tree, read from `/proc`: a proxy's master process plus its workers.

use std::{collections::HashSet, fs, io};

/// Sum of `VmRSS` (KiB) over the given processes and all of their descendants.
pub fn tree_rss_kib(roots: &[u32]) -> io::Result<u64> {
    let mut total = 0;
    for pid in descendants(roots)? {
        // A worker may exit between the scan and the read; it then holds no memory.
        match rss_kib(pid) {
            Ok(kib) => total += kib,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(total)
}

/// `VmRSS` of one process in KiB (0 for kernel threads, which have none).
pub fn rss_kib(pid: u32) -> io::Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    Ok(status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0))
}

/// The roots and every process whose parent chain leads to one of them.
pub(crate) fn descendants(roots: &[u32]) -> io::Result<Vec<u32>> {
    let mut parents = Vec::new();
    for entry in fs::read_dir("/proc")? {
        let Some(pid) = entry?
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some(ppid) = fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| parse_ppid(&stat))
        {
            parents.push((pid, ppid));
        }
    }
    let mut found: Vec<u32> = roots.to_vec();
    let mut seen: HashSet<u32> = roots.iter().copied().collect();
    let mut next = 0;
    while next < found.len() {
        let parent = found[next];
        next += 1;
        for &(pid, ppid) in &parents {
            if ppid == parent && seen.insert(pid) {
                found.push(pid);
            }
        }
    }
    Ok(found)
}

/// The parent pid from a `/proc/PID/stat` line.
fn parse_ppid(stat: &str) -> Option<u32> {
    stat_field(stat, 4)?.parse().ok()
}

/// Field `n` (1-based, as in proc(5)) of a `/proc/PID/stat` line, from field 3 on: the command name in
/// parentheses (field 2) may itself hold `)` or spaces, so fields are counted after its last `)`.
pub(crate) fn stat_field(stat: &str, n: usize) -> Option<&str> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    after_comm.split_whitespace().nth(n.checked_sub(3)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ppid_is_read_after_the_command_name() {
        assert_eq!(
            parse_ppid("4242 (nginx: worker) S 4241 4241 1 0"),
            Some(4241)
        );
        assert_eq!(parse_ppid("7 (a) b) c) R 1 7 7"), Some(1));
        assert_eq!(parse_ppid("garbage"), None);
    }

    #[test]
    fn own_process_has_resident_memory() {
        // Other tests allocate and free concurrently, so the two readings are not compared.
        let me = std::process::id();
        assert!(rss_kib(me).unwrap() > 0);
        assert!(tree_rss_kib(&[me]).unwrap() > 0);
    }

    #[test]
    fn children_are_included() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let tree = descendants(&[std::process::id()]).unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(tree.contains(&child.id()));
    }
}
