//! A log-linear latency histogram: fixed memory, constant-time recording, percentiles to
//! within 1/64 (about 1.6%) of the true value.
//!
//! Values (nanoseconds) below 64 get a bucket each; above, every power of two is split into 64
//! equal buckets. This is the layout of HdrHistogram with 6 significant bits, in 40 lines.

/// Bits of the value kept below its leading one: 64 buckets per power of two.
const SUB_BUCKET_BITS: u32 = 6;
/// Buckets per power of two.
const SUB_BUCKETS: usize = 1 << SUB_BUCKET_BITS;
/// Buckets needed for every `u64`.
const BUCKETS: usize = (64 - SUB_BUCKET_BITS as usize + 1) * SUB_BUCKETS;

/// Counts of latencies in nanoseconds.
#[derive(Debug, Clone)]
pub struct Histogram {
    counts: Box<[u64]>,
    total: u64,
    max_ns: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: vec![0; BUCKETS].into_boxed_slice(),
            total: 0,
            max_ns: 0,
        }
    }
}

/// The bucket of `value`.
fn index_of(value: u64) -> usize {
    if value < SUB_BUCKETS as u64 {
        return value as usize;
    }
    let exponent = 63 - value.leading_zeros();
    let shift = exponent - SUB_BUCKET_BITS;
    let mantissa = (value >> shift) as usize;
    (shift as usize + 1) * SUB_BUCKETS + (mantissa - SUB_BUCKETS)
}

/// The smallest value of bucket `index`, and the bucket's width.
fn bucket_bounds(index: usize) -> (u64, u64) {
    if index < SUB_BUCKETS {
        return (index as u64, 1);
    }
    let shift = index / SUB_BUCKETS - 1;
    let mantissa = (index % SUB_BUCKETS + SUB_BUCKETS) as u64;
    (mantissa << shift, 1 << shift)
}

impl Histogram {
    /// Counts one latency.
    #[inline]
    pub fn record(&mut self, value_ns: u64) {
        let index = index_of(value_ns);
        if let Some(count) = self.counts.get_mut(index) {
            *count += 1;
        }
        self.total += 1;
        self.max_ns = self.max_ns.max(value_ns);
    }

    /// Adds every count of `other`.
    pub fn merge(&mut self, other: &Self) {
        for (count, more) in self.counts.iter_mut().zip(other.counts.iter()) {
            *count += more;
        }
        self.total += other.total;
        self.max_ns = self.max_ns.max(other.max_ns);
    }

    /// Values recorded.
    pub fn len(&self) -> u64 {
        self.total
    }

    /// The largest value recorded (0 when empty).
    pub fn max_ns(&self) -> u64 {
        self.max_ns
    }

    /// The value at `quantile` (0.0..=1.0) in nanoseconds: the middle of the bucket holding
    /// that rank, never above the largest value recorded (which the top rank returns exactly).
    /// `None` when empty.
    pub fn quantile_ns(&self, quantile: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((quantile.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        if rank >= self.total {
            return Some(self.max_ns);
        }
        let mut seen = 0;
        for (index, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                let (low, width) = bucket_bounds(index);
                return Some((low + width / 2).min(self.max_ns));
            }
        }
        Some(self.max_ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_contain_their_values() {
        let mut values: Vec<u64> = (0..5000).collect();
        values.extend((0..64).map(|bit| 1_u64 << bit));
        values.extend((1..64).map(|bit| (1_u64 << bit) - 1));
        values.push(u64::MAX);
        for value in values {
            let index = index_of(value);
            assert!(index < BUCKETS, "{value} -> {index}");
            let (low, width) = bucket_bounds(index);
            assert!(
                low <= value,
                "{value} below bucket {index} [{low}, +{width})"
            );
            assert!(
                value - low < width,
                "{value} above bucket {index} [{low}, +{width})"
            );
        }
        for index in 1..BUCKETS {
            let (low, _) = bucket_bounds(index);
            let (previous_low, previous_width) = bucket_bounds(index - 1);
            assert_eq!(
                previous_low + previous_width,
                low,
                "gap before bucket {index}"
            );
        }
    }

    #[test]
    fn quantiles_are_within_the_bucket_resolution() {
        let mut histogram = Histogram::default();
        for value in 1..=100_000 {
            histogram.record(value);
        }
        for (quantile, expected) in [(0.5, 50_000.0), (0.99, 99_000.0), (0.999, 99_900.0)] {
            let found = histogram.quantile_ns(quantile).expect("not empty") as f64;
            let error = (found - expected).abs() / expected;
            assert!(error < 1.0 / 64.0, "q{quantile}: {found} vs {expected}");
        }
        assert_eq!(histogram.quantile_ns(1.0), Some(100_000));
        assert_eq!(histogram.len(), 100_000);
    }

    #[test]
    fn merge_adds_counts_and_empty_has_no_quantile() {
        let mut left = Histogram::default();
        assert_eq!(left.quantile_ns(0.5), None);
        let mut right = Histogram::default();
        left.record(10);
        right.record(30);
        right.record(30);
        left.merge(&right);
        assert_eq!(left.len(), 3);
        assert_eq!(left.quantile_ns(0.5), Some(30));
        assert_eq!(left.quantile_ns(0.0), Some(10));
    }
}
