//! Test support for walbuf's cross-crate scenario tests: a simulated disk ([`sim`]) that
//! tracks written versus durable bytes and builds the image a crash would leave, and the
//! checks shared by the `log_*` tests ([`check`]).
//!
//! ```
//! use walbuf::log::Config;
//! use walbuf_recovery::Options;
//! use walbuf_tests::check::open_collect;
//! use walbuf_tests::sim::{PowerLoss, SimStorage};
//!
//! let storage = SimStorage::new();
//! let disk = storage.disk(); // stays usable after the log owns the storage
//! let config = Config { segment_size_bytes: 16 * 1024, max_record_bytes: 4096, ..Config::default() };
//! let (log, _report, _) = open_collect(storage, config.clone(), Options::default())?;
//! let key = log.append(1, b"durable")?; // SyncPolicy::Sync: durable when it returns
//!
//! // Pull the plug: every unsynced byte and directory operation is lost.
//! let mut rng = rand::rng();
//! let image = disk.power_loss_image(PowerLoss::DROP_ALL, &mut rng);
//! let (_log, _report, recovered) = open_collect(image, config, Options::default())?;
//! assert_eq!(recovered[0].op_key, key);
//! assert_eq!(recovered[0].payload, b"durable");
//! # Ok::<(), walbuf::Error>(())
//! ```

pub mod check;
pub mod crash_model;
pub mod fuzz;
pub mod fuzz_store;
pub mod model;
pub mod sim;
