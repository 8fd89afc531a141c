//! Names of the files in a log directory.

/// Extension of segment files.
pub const SEGMENT_EXTENSION: &str = "wal";
/// Suffix of files being prepared for use as the next segment; recovery deletes them.
pub const PREPARED_SUFFIX: &str = ".wal.tmp";
/// Name of the lock file that gives one process exclusive ownership of the directory.
pub const LOCK_FILE_NAME: &str = "LOCK";

/// The file name of the segment whose first op key is `first_op_key`: 20 decimal digits and
/// `.wal`, so that names sort in op-key order.
#[must_use]
pub fn segment_file_name(first_op_key: u64) -> String {
    format!("{first_op_key:020}.{SEGMENT_EXTENSION}")
}

/// The first op key encoded in a segment file name, or `None` if `name` is not one.
#[must_use]
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".wal")?;
    if digits.len() != 20 || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Whether `name` is a prepared (not yet used) segment that recovery may delete.
#[must_use]
pub fn is_prepared_file_name(name: &str) -> bool {
    name.ends_with(PREPARED_SUFFIX)
}

/// The segment files among `names`, as `(first op key, name)` sorted by op key.
#[must_use]
pub fn sorted_segment_names<I, S>(names: I) -> Vec<(u64, String)>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let mut segments: Vec<(u64, String)> = names
        .into_iter()
        .map(Into::into)
        .filter_map(|name| parse_segment_file_name(&name).map(|key| (key, name)))
        .collect();
    segments.sort_unstable();
    segments
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_sort() {
        assert_eq!(segment_file_name(1), "00000000000000000001.wal");
        assert_eq!(
            parse_segment_file_name(&segment_file_name(u64::MAX)),
            Some(u64::MAX)
        );
        assert_eq!(parse_segment_file_name("1.wal"), None);
        assert_eq!(parse_segment_file_name("0000000000000000000a.wal"), None);
        let sorted = sorted_segment_names([
            "00000000000000000010.wal",
            "LOCK",
            "00000000000000000002.wal",
        ]);
        assert_eq!(
            sorted.iter().map(|(key, _)| *key).collect::<Vec<_>>(),
            vec![2, 10]
        );
    }
}
