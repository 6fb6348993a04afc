//! Resource limits of an instance, in the same words for every provider: memory in bytes,
//! CPU in cores, and a cap on processes (or threads).

use serde::{Deserialize, Deserializer, Serialize};

/// The least memory limit tend accepts: below it no runtime starts reliably (Docker refuses
/// less than 6 MiB).
pub const MIN_MEMORY: u64 = 6 * 1024 * 1024;

/// The most CPU cores a limit may name.
pub const MAX_CPU: f64 = 1024.0;

/// The fewest CPU cores a limit may name: what the Docker Engine and a cgroup's CPU quota
/// can both enforce, so `cpu` means the same for every provider.
pub const MIN_CPU: f64 = 0.01;

/// Limits of one instance; each is optional.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    /// Memory, in bytes (written `"256M"`, `"1G"`, `"512Ki"`, ...).
    #[serde(
        default,
        deserialize_with = "memory_bytes",
        skip_serializing_if = "Option::is_none"
    )]
    pub memory: Option<u64>,
    /// CPU time, in cores: `0.5` is half of one core.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<f64>,
    /// Processes (threads, for the kernel) at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u64>,
}

impl Resources {
    /// True when no limit is set.
    pub fn is_empty(&self) -> bool {
        self.memory.is_none() && self.cpu.is_none() && self.pids.is_none()
    }
}

/// Why a limit is refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ResourceError {
    /// A memory size that does not parse.
    #[error("invalid memory {0:?}: write a whole number and a unit, such as \"256M\", \"1G\" or \"512Ki\" (K, M, G, T are powers of 1024)")]
    BadMemory(String),
    /// A memory limit too small to run anything.
    #[error("memory {0:?} is too small: the least is 6M")]
    TooLittleMemory(String),
    /// A CPU limit that is not a positive number of cores.
    #[error("cpu must be at least 0.01 and at most 1024 cores, got {0}")]
    BadCpu(f64),
    /// A process cap below one.
    #[error("pids must be at least 1, got {0}")]
    BadPids(i64),
}

/// Parses a memory size: a whole number and an optional unit `K`, `M`, `G` or `T` (powers
/// of 1024, optionally written `Ki`, `KiB`, `KB`, ...); a bare number is bytes.
pub fn parse_memory(text: &str) -> Result<u64, ResourceError> {
    let bad = || ResourceError::BadMemory(text.to_owned());
    let trimmed = text.trim();
    let digits = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(digits);
    let number: u64 = number.parse().map_err(|_| bad())?;
    let unit = unit.trim_end_matches(['B', 'b']).trim_end_matches('i');
    let shift = match unit.to_ascii_uppercase().as_str() {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return Err(bad()),
    };
    let bytes = number.checked_shl(shift).filter(|b| b >> shift == number);
    let bytes = bytes.ok_or_else(bad)?;
    if bytes < MIN_MEMORY {
        return Err(ResourceError::TooLittleMemory(text.to_owned()));
    }
    Ok(bytes)
}

/// Checks a CPU limit in cores.
pub fn check_cpu(cores: f64) -> Result<f64, ResourceError> {
    if cores.is_finite() && (MIN_CPU..=MAX_CPU).contains(&cores) {
        Ok(cores)
    } else {
        Err(ResourceError::BadCpu(cores))
    }
}

/// Checks a process cap.
pub fn check_pids(pids: i64) -> Result<u64, ResourceError> {
    u64::try_from(pids)
        .ok()
        .filter(|p| *p >= 1)
        .ok_or(ResourceError::BadPids(pids))
}

/// Memory as a spec writes it (`"256M"`) or as bytes.
fn memory_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Written {
        Bytes(u64),
        Text(String),
    }
    match Option::<Written>::deserialize(d)? {
        None => Ok(None),
        Some(Written::Bytes(b)) => Ok(Some(b)),
        Some(Written::Text(t)) => parse_memory(&t).map(Some).map_err(serde::de::Error::custom),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes_are_powers_of_1024() {
        assert_eq!(parse_memory("256M"), Ok(256 << 20));
        assert_eq!(parse_memory("1G"), Ok(1 << 30));
        assert_eq!(parse_memory("1Gi"), Ok(1 << 30));
        assert_eq!(parse_memory("8192KiB"), Ok(8 << 20));
        assert_eq!(parse_memory("7340032"), Ok(7 << 20));
        assert!(matches!(
            parse_memory("1.5G"),
            Err(ResourceError::BadMemory(_))
        ));
        assert!(matches!(
            parse_memory("12X"),
            Err(ResourceError::BadMemory(_))
        ));
        assert!(matches!(parse_memory(""), Err(ResourceError::BadMemory(_))));
        assert!(matches!(
            parse_memory("99999999999999T"),
            Err(ResourceError::BadMemory(_))
        ));
        assert!(matches!(
            parse_memory("1M"),
            Err(ResourceError::TooLittleMemory(_))
        ));
    }

    #[test]
    fn cpu_and_pids_must_be_positive() {
        assert_eq!(check_cpu(0.5), Ok(0.5));
        assert!(check_cpu(0.0).is_err());
        assert!(
            check_cpu(0.001).is_err(),
            "below what every provider enforces"
        );
        assert_eq!(check_cpu(0.01), Ok(0.01));
        assert!(check_cpu(f64::NAN).is_err());
        assert!(check_cpu(2000.0).is_err());
        assert_eq!(check_pids(64), Ok(64));
        assert!(check_pids(0).is_err());
    }

    #[test]
    fn a_spec_writes_memory_as_text_and_the_model_keeps_bytes() {
        let r: Resources =
            serde_json::from_str(r#"{"memory": "64M", "cpu": 0.5}"#).unwrap_or_default();
        assert_eq!(r.memory, Some(64 << 20));
        assert_eq!(
            serde_json::to_string(&r).unwrap_or_default(),
            r#"{"memory":67108864,"cpu":0.5}"#
        );
    }
}
