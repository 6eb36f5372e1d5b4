//! The counters and key/value store the host keeps for plugins: a namespace
//! per plugin and one shared, expiry, compare-and-set, and the limits
//! `wasp.wit` documents. wasp's plugin runtime and the SDK's native test
//! host ([`testing`](crate::testing), feature `testing`) both run this code,
//! so a plugin tested natively meets the limits it meets in wasp.
//!
//! Times are milliseconds on the caller's clock (monotonic in wasp, the test
//! clock in [`testing`](crate::testing)).

use std::collections::HashMap;
use std::fmt;

/// Longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 256;
/// Longest value, in bytes.
pub const MAX_VALUE_BYTES: usize = 65_536;
/// Most live keys a namespace holds, for values and for counters apart.
pub const MAX_KEYS: usize = 10_000;
/// Most bytes of keys and values a namespace holds.
pub const MAX_BYTES: usize = 16 << 20;

/// Why a write was refused; nothing was changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvError {
    /// The key is longer than [`MAX_KEY_BYTES`]: its length.
    KeyTooLong(u32),
    /// The value is longer than [`MAX_VALUE_BYTES`]: its length.
    ValueTooLarge(u32),
    /// The namespace holds [`MAX_KEYS`] live keys or [`MAX_BYTES`] bytes.
    NamespaceFull,
}

impl fmt::Display for KvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KvError::KeyTooLong(len) => {
                write!(f, "key of {len} bytes (at most {MAX_KEY_BYTES})")
            }
            KvError::ValueTooLarge(len) => {
                write!(f, "value of {len} bytes (at most {MAX_VALUE_BYTES})")
            }
            KvError::NamespaceFull => write!(
                f,
                "namespace full ({MAX_KEYS} keys or {} MiB of keys and values)",
                MAX_BYTES >> 20
            ),
        }
    }
}

impl std::error::Error for KvError {}

/// Which namespace a call uses: the calling plugin's (by name) or the
/// shared one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope<'a> {
    Plugin(&'a str),
    Shared,
}

/// Every namespace.
#[derive(Default)]
pub struct Store {
    shared: Namespace,
    plugins: HashMap<String, Namespace>,
}

impl Store {
    /// The namespace of `scope`, created empty on first use.
    pub fn namespace(&mut self, scope: Scope<'_>) -> &mut Namespace {
        match scope {
            Scope::Shared => &mut self.shared,
            Scope::Plugin(name) => {
                if !self.plugins.contains_key(name) {
                    self.plugins.insert(name.to_owned(), Namespace::default());
                }
                self.plugins.get_mut(name).expect("inserted above")
            }
        }
    }
}

struct Entry {
    value: String,
    /// Expiry time on the caller's clock, if any.
    expires_at: Option<u64>,
}

impl Entry {
    fn live(&self, now: u64) -> bool {
        self.expires_at.is_none_or(|at| at > now)
    }
}

/// One namespace's counters and values.
#[derive(Default)]
pub struct Namespace {
    values: HashMap<String, Entry>,
    /// Bytes of the keys and values in `values`.
    bytes: usize,
    counters: HashMap<String, i64>,
}

impl Namespace {
    /// Adds `delta` to counter `key` (created at 0), wrapping on overflow.
    pub fn counter_add(&mut self, key: &str, delta: i64) -> Result<i64, KvError> {
        check_key(key)?;
        if !self.counters.contains_key(key) && self.counters.len() >= MAX_KEYS {
            return Err(KvError::NamespaceFull);
        }
        let value = self.counters.entry(key.to_owned()).or_insert(0);
        *value = value.wrapping_add(delta);
        Ok(*value)
    }

    /// Sets counter `key` to `value` (another process's count of it).
    pub fn counter_set(&mut self, key: &str, value: i64) -> Result<(), KvError> {
        check_key(key)?;
        if !self.counters.contains_key(key) && self.counters.len() >= MAX_KEYS {
            return Err(KvError::NamespaceFull);
        }
        self.counters.insert(key.to_owned(), value);
        Ok(())
    }

    /// The live value of `key`.
    pub fn get(&self, key: &str, now: u64) -> Option<&str> {
        let entry = self.values.get(key)?;
        entry.live(now).then_some(entry.value.as_str())
    }

    /// Stores `value` under `key`, expiring `ttl_ms` after `now` if given.
    pub fn set(
        &mut self,
        key: &str,
        value: &str,
        ttl_ms: Option<u64>,
        now: u64,
    ) -> Result<(), KvError> {
        check_key(key)?;
        if value.len() > MAX_VALUE_BYTES {
            return Err(KvError::ValueTooLarge(len_u32(value)));
        }
        self.make_room(key, value, now)?;
        let entry = Entry {
            value: value.to_owned(),
            expires_at: ttl_ms.map(|ttl| now.saturating_add(ttl)),
        };
        self.bytes += key.len() + value.len();
        if let Some(old) = self.values.insert(key.to_owned(), entry) {
            self.bytes -= key.len() + old.value.len();
        }
        Ok(())
    }

    /// Removes `key`; true when it held a live value.
    pub fn delete(&mut self, key: &str, now: u64) -> bool {
        match self.values.remove(key) {
            Some(old) => {
                self.bytes -= key.len() + old.value.len();
                old.live(now)
            }
            None => false,
        }
    }

    /// When the live value of `key` is `expected` (`None`: none), sets it
    /// to `value` (`None`: deletes it) and returns true; else false.
    pub fn compare_and_set(
        &mut self,
        key: &str,
        expected: Option<&str>,
        value: Option<&str>,
        ttl_ms: Option<u64>,
        now: u64,
    ) -> Result<bool, KvError> {
        check_key(key)?;
        if self.get(key, now) != expected {
            return Ok(false);
        }
        match value {
            Some(value) => self.set(key, value, ttl_ms, now)?,
            None => {
                self.delete(key, now);
            }
        }
        Ok(true)
    }

    /// Refuses a write that would take the namespace over its limits, after
    /// forgetting the expired entries if that could make room.
    fn make_room(&mut self, key: &str, value: &str, now: u64) -> Result<(), KvError> {
        let fits = |ns: &Namespace| {
            let (keys, bytes) = match ns.values.get(key) {
                Some(old) => (ns.values.len(), ns.bytes - key.len() - old.value.len()),
                None => (ns.values.len() + 1, ns.bytes),
            };
            keys <= MAX_KEYS && bytes + key.len() + value.len() <= MAX_BYTES
        };
        if fits(self) {
            return Ok(());
        }
        let mut freed = 0;
        self.values.retain(|k, entry| {
            let live = entry.live(now);
            if !live {
                freed += k.len() + entry.value.len();
            }
            live
        });
        self.bytes -= freed;
        if fits(self) {
            Ok(())
        } else {
            Err(KvError::NamespaceFull)
        }
    }
}

fn check_key(key: &str) -> Result<(), KvError> {
    if key.len() > MAX_KEY_BYTES {
        return Err(KvError::KeyTooLong(len_u32(key)));
    }
    Ok(())
}

fn len_u32(s: &str) -> u32 {
    u32::try_from(s.len()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugins_have_their_own_namespaces_and_share_one() {
        let mut store = Store::default();
        store
            .namespace(Scope::Plugin("a"))
            .set("k", "from a", None, 0)
            .unwrap();
        store
            .namespace(Scope::Shared)
            .set("k", "shared", None, 0)
            .unwrap();
        assert_eq!(
            store.namespace(Scope::Plugin("a")).get("k", 0),
            Some("from a")
        );
        assert_eq!(store.namespace(Scope::Plugin("b")).get("k", 0), None);
        assert_eq!(store.namespace(Scope::Shared).get("k", 0), Some("shared"));
        store
            .namespace(Scope::Plugin("b"))
            .counter_add("n", 2)
            .unwrap();
        assert_eq!(
            store.namespace(Scope::Plugin("a")).counter_add("n", 1),
            Ok(1)
        );
    }

    #[test]
    fn values_expire_and_deleting_an_expired_one_reports_nothing_live() {
        let mut ns = Namespace::default();
        ns.set("t", "v", Some(100), 1_000).unwrap();
        assert_eq!(ns.get("t", 1_099), Some("v"));
        assert_eq!(ns.get("t", 1_100), None);
        assert!(!ns.delete("t", 1_100));
        ns.set("p", "v", None, 0).unwrap();
        assert!(ns.delete("p", u64::MAX));
        assert!(!ns.delete("p", 0));
        assert_eq!(ns.bytes, 0);
    }

    #[test]
    fn compare_and_set_takes_and_gives_back_a_lease() {
        let mut ns = Namespace::default();
        assert_eq!(
            ns.compare_and_set("lease", None, Some("a"), Some(50), 0),
            Ok(true)
        );
        assert_eq!(
            ns.compare_and_set("lease", None, Some("b"), Some(50), 10),
            Ok(false)
        );
        assert_eq!(
            ns.compare_and_set("lease", Some("b"), None, None, 10),
            Ok(false)
        );
        assert_eq!(ns.get("lease", 10), Some("a"));
        // Expired, it is free again.
        assert_eq!(
            ns.compare_and_set("lease", None, Some("b"), Some(50), 60),
            Ok(true)
        );
        assert_eq!(
            ns.compare_and_set("lease", Some("b"), None, None, 70),
            Ok(true)
        );
        assert_eq!(ns.get("lease", 70), None);
    }

    #[test]
    fn limits_refuse_with_the_reason_and_change_nothing() {
        let mut ns = Namespace::default();
        let long_key = "k".repeat(MAX_KEY_BYTES + 1);
        assert_eq!(
            ns.set(&long_key, "v", None, 0),
            Err(KvError::KeyTooLong(257))
        );
        assert_eq!(ns.counter_add(&long_key, 1), Err(KvError::KeyTooLong(257)));
        let big = "v".repeat(MAX_VALUE_BYTES + 1);
        assert_eq!(
            ns.set("k", &big, None, 0),
            Err(KvError::ValueTooLarge(65_537))
        );
        assert_eq!(ns.get("k", 0), None);
        assert_eq!(
            KvError::ValueTooLarge(65_537).to_string(),
            "value of 65537 bytes (at most 65536)"
        );
    }

    #[test]
    fn a_full_namespace_refuses_new_keys_until_some_expire() {
        let mut ns = Namespace::default();
        for i in 0..MAX_KEYS {
            ns.set(&i.to_string(), "v", (i == 0).then_some(10), 0)
                .unwrap();
        }
        assert_eq!(
            ns.set("one more", "v", None, 0),
            Err(KvError::NamespaceFull)
        );
        // Overwriting an existing key adds no key.
        ns.set("5", "w", None, 0).unwrap();
        // Key "0" expires at 10: its room is taken back.
        ns.set("one more", "v", None, 10).unwrap();
        assert_eq!(ns.values.len(), MAX_KEYS);
    }

    #[test]
    fn the_byte_budget_counts_keys_and_values() {
        let mut ns = Namespace::default();
        let value = "v".repeat(MAX_VALUE_BYTES);
        let fit = MAX_BYTES / (MAX_VALUE_BYTES + 3);
        for i in 0..fit {
            ns.set(&format!("{i:03}"), &value, None, 0).unwrap();
        }
        assert_eq!(ns.set("big", &value, None, 0), Err(KvError::NamespaceFull));
        // Replacing a value by a smaller one always fits.
        ns.set("000", "small", None, 0).unwrap();
        ns.set("big", &value, None, 0).unwrap();
    }
}
