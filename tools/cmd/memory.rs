//! How much memory this process may use: the machine's, or its control group's limit where that
//! is lower (Linux; `None` elsewhere or when nothing can be read).

use std::path::Path;

/// The memory this process may use in bytes: the smaller of the machine's total memory
/// (`/proc/meminfo`) and the limit of the process's memory control group (cgroup v2
/// `memory.max` or v1 `memory.limit_in_bytes`), if any.
pub fn usable_bytes() -> Option<u64> {
    let total = std::fs::read_to_string("/proc/meminfo").ok().and_then(|t| mem_total(&t));
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").ok().and_then(|t| cgroup_limit(&t));
    match (total, cgroup) {
        (Some(t), Some(c)) => Some(t.min(c)),
        (t, c) => t.or(c),
    }
}

/// `MemTotal` of a `/proc/meminfo` text, in bytes.
fn mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// The memory limit of the control group a `/proc/self/cgroup` text names, read from its
/// files under `/sys/fs/cgroup` (`None`: unlimited or unreadable).
fn cgroup_limit(self_cgroup: &str) -> Option<u64> {
    self_cgroup.lines().find_map(|line| {
        let mut fields = line.splitn(3, ':');
        let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
        let relative = path.trim_start_matches('/');
        let file = if controllers.is_empty() {
            Path::new("/sys/fs/cgroup").join(relative).join("memory.max")
        } else if controllers.split(',').any(|c| c == "memory") {
            Path::new("/sys/fs/cgroup/memory").join(relative).join("memory.limit_in_bytes")
        } else {
            return None;
        };
        parse_limit(&std::fs::read_to_string(file).ok()?)
    })
}

/// A limit file's value; `max` (v2) or a value near `i64::MAX` (v1's "unlimited") is `None`.
fn parse_limit(text: &str) -> Option<u64> {
    let value: u64 = text.trim().parse().ok()?;
    (value < (1 << 60)).then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_total_and_the_limits() {
        assert_eq!(mem_total("MemTotal:       24576000 kB\nMemFree: 1 kB\n"), Some(24_576_000 * 1024));
        assert_eq!(mem_total("MemFree: 1 kB\n"), None);
        assert_eq!(parse_limit("134217728\n"), Some(134_217_728));
        assert_eq!(parse_limit("max\n"), None);
        assert_eq!(parse_limit("9223372036854771712\n"), None);
        assert_eq!(cgroup_limit("5:cpu,cpuacct:/x\n"), None, "no memory controller listed");
    }
}
