# Shell pieces the harnesses that write one section of BENCHMARKS.md by themselves share (bench/soak.sh,
# bench/reload.sh): sourced, not run. Call `run_began` before the run, then `machine` and `write_section`.

run_began() { # what was built and when the run began (HEAD may move while it runs)
    BEGAN_COMMIT=$(git rev-parse --short HEAD)
    BEGAN_DATE=$(date -u '+%Y-%m-%d %H:%M UTC')
    BEGAN_LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
}

machine() { # the section's Machine block, without its fences
    echo "date: $BEGAN_DATE, commit $BEGAN_COMMIT"
    echo "kernel: $(uname -srm)"
    lscpu | grep -E '^(CPU\(s\)|Model name|Hypervisor vendor):' | sed 's/  */ /g'
    echo "load average at start: $BEGAN_LOAD"
}

write_section() { # $1: NAME, $2: the section: replaces <!-- bench:NAME:start --> … <!-- bench:NAME:end -->, or appends it
    python3 - "$1" "$2" <<'PY'
import re, sys
name, section = sys.argv[1], sys.argv[2]
text = open("BENCHMARKS.md").read()
pattern = re.compile(r"<!-- bench:%s:start -->.*?<!-- bench:%s:end -->" % (name, name), re.S)
text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + section + "\n"
open("BENCHMARKS.md", "w").write(text)
PY
}
