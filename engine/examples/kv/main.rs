//! A key–value store on walbuf's generic core: someone else's ops (put, delete) with their
//! own SQLite table and overlay, logged, buffered, readable at once and flushed in batches —
//! without touching the engine. The schema and the store are in `schema.rs`.
//!
//! Run: `cargo run --release -p walbuf --example kv`.

#![allow(clippy::print_stdout)]

mod schema;

use walbuf::store::StoreConfig;

use self::schema::KvStore;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let config = StoreConfig {
        log: walbuf::log::Config {
            sync_policy: walbuf::SyncPolicy::Periodic { interval_ms: 10 },
            ..walbuf::log::Config::default()
        },
        ..StoreConfig::default()
    };
    let started = std::time::Instant::now();
    {
        let (kv, _) = KvStore::open(dir.path(), config.clone())?;
        for index in 0..100_000u32 {
            kv.put(&index.to_be_bytes(), &[7u8; 100])?;
        }
        for index in (0..100_000u32).step_by(10) {
            kv.delete(&index.to_be_bytes())?;
        }
        kv.sync()?;
        println!(
            "wrote 110000 ops in {:?} (durable); {} keys; {} ops still buffered",
            started.elapsed(),
            kv.key_count()?,
            kv.stats().pending_ops
        );
        kv.close()?;
    }
    let (kv, report) = KvStore::open(dir.path(), config)?;
    println!(
        "reopened in {:?} (replayed {} ops): {} keys, key 1 = {:?} bytes",
        report.elapsed,
        report.ops_replayed,
        kv.key_count()?,
        kv.get(&1u32.to_be_bytes())?.map(|value| value.len())
    );
    kv.flush()?;
    println!("flushed: {} ops still buffered", kv.stats().pending_ops);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> StoreConfig {
        StoreConfig {
            log: walbuf::log::Config {
                segment_size_bytes: 1 << 20,
                max_record_bytes: 64 << 10,
                sync_policy: walbuf::SyncPolicy::None,
                ..walbuf::log::Config::default()
            },
            flush_interval_ms: 3_600_000,
            ..StoreConfig::default()
        }
    }

    #[test]
    fn puts_gets_deletes_and_counts_across_flushes_and_reopens() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let (kv, _) = KvStore::open(dir.path(), config()).expect("open");
            kv.put(b"a", b"1").expect("put");
            kv.put(b"b", b"2").expect("put");
            assert_eq!(kv.get(b"a").expect("get"), Some(b"1".to_vec()));
            kv.flush().expect("flush");
            kv.put(b"a", b"3").expect("overwrite a flushed key");
            assert!(kv.delete(b"b").expect("delete"));
            assert!(!kv.delete(b"zz").expect("delete a missing key"));
            assert_eq!(kv.get(b"a").expect("get"), Some(b"3".to_vec()));
            assert_eq!(kv.get(b"b").expect("get"), None);
            assert_eq!(kv.key_count().expect("len"), 1);
            kv.put(b"c", b"4").expect("put");
        }
        let (kv, _) = KvStore::open(dir.path(), config()).expect("reopen");
        assert_eq!(kv.get(b"a").expect("get"), Some(b"3".to_vec()));
        assert_eq!(kv.get(b"b").expect("get"), None);
        assert_eq!(kv.get(b"c").expect("get"), Some(b"4".to_vec()));
        assert_eq!(kv.key_count().expect("len"), 2);
        kv.flush().expect("flush");
        assert_eq!(kv.key_count().expect("len"), 2);
    }

    #[test]
    fn the_kv_database_is_not_a_shape_database() {
        let dir = tempfile::tempdir().expect("tempdir");
        drop(KvStore::open(dir.path(), config()).expect("open"));
        let error = walbuf::ShapeRegistry::open(dir.path(), config()).expect_err("other schema");
        assert!(
            matches!(error, walbuf::Error::IncompatibleDatabase { .. }),
            "{error}"
        );
    }
}
