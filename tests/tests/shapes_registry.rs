//! The shape registry's operations and reads, before and after flushes and reopens.

use std::sync::Arc;
use std::time::Duration;

use walbuf::SyncPolicy;
use walbuf::shapes::{NewShape, RegistryError, Relation, ShapeRegistry, SnapshotState};
use walbuf::store::StoreConfig;
use walbuf_tests::check::{small_log_config, within};

fn config(policy: SyncPolicy) -> StoreConfig {
    StoreConfig {
        log: small_log_config(policy),
        // Flush only when asked: tests decide what is buffered.
        flush_interval_ms: 3_600_000,
        ..StoreConfig::default()
    }
}

fn shape(handle: &str, comparable: &str, oids: &[u32]) -> NewShape {
    NewShape {
        handle: handle.into(),
        shape: format!("definition of {handle}").into_bytes(),
        comparable: comparable.as_bytes().to_vec(),
        hash: handle.len() as i64,
        relations: oids
            .iter()
            .map(|oid| Relation {
                oid: *oid,
                schema: "public".into(),
                table: format!("t{oid}").into(),
            })
            .collect(),
    }
}

fn handles(registry: &ShapeRegistry) -> Vec<String> {
    registry
        .list_shapes()
        .map(|shape| shape.expect("list").handle)
        .collect()
}

#[test]
fn writes_are_readable_at_once_and_after_flush_and_reopen() {
    for policy in [SyncPolicy::Sync, SyncPolicy::None] {
        let dir = tempfile::tempdir().expect("tempdir");
        let (registry, report) = ShapeRegistry::open(dir.path(), config(policy)).expect("open");
        assert_eq!(report.ops_replayed, 0);
        registry
            .add_shape(shape("h1", "c1", &[10, 11]))
            .expect("add h1");
        registry
            .add_shape(shape("h2", "c2", &[11]))
            .expect("add h2");
        registry.add_shape(shape("h0", "c0", &[])).expect("add h0");

        let check = |registry: &ShapeRegistry| {
            assert_eq!(
                registry.handle_for_shape(b"c1").expect("read"),
                Some("h1".into())
            );
            let h2 = registry
                .shape_for_handle("h2")
                .expect("read")
                .expect("h2 live");
            assert_eq!(h2.relations.len(), 1);
            assert_eq!(h2.snapshot, SnapshotState::NotStarted);
            assert!(registry.has_handle("h0").expect("read"));
            assert!(!registry.has_handle("nope").expect("read"));
            assert!(registry.validate_handle("h1", 2).expect("read"));
            assert!(!registry.validate_handle("h1", 3).expect("read"));
            assert_eq!(
                registry.handles_for_relations(&[11]).expect("read"),
                vec!["h1".to_string(), "h2".to_string()]
            );
            assert_eq!(
                registry.handles_for_relations(&[10, 99]).expect("read"),
                vec!["h1".to_string()]
            );
            assert_eq!(handles(registry), vec!["h0", "h1", "h2"]);
            assert_eq!(registry.count_shapes().expect("count"), 3);
        };
        check(&registry);
        registry.flush().expect("flush");
        assert_eq!(registry.stats().pending_ops, 0);
        check(&registry);
        registry
            .add_shape(shape("h3", "c3", &[11]))
            .expect("add h3");
        registry.close().expect("close");
        drop(registry);

        let (registry, report) = ShapeRegistry::open(dir.path(), config(policy)).expect("reopen");
        // close() flushes what is visible; whatever it did not is replayed.
        assert!(report.watermark >= 3, "{policy:?}");
        assert_eq!(report.ops_replayed + report.watermark, 4);
        assert_eq!(handles(&registry), vec!["h0", "h1", "h2", "h3"]);
        assert_eq!(registry.count_shapes().expect("count"), 4);
    }
}

#[test]
fn duplicates_and_unknown_handles_are_refused_with_typed_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (registry, _) = ShapeRegistry::open(dir.path(), config(SyncPolicy::None)).expect("open");
    registry.add_shape(shape("h1", "c1", &[1])).expect("add");
    registry.flush().expect("flush");
    registry.add_shape(shape("h2", "c2", &[1])).expect("add");
    // h1 is in SQLite, h2 is buffered: both are live for validation.
    for (new, what) in [
        (shape("h1", "cx", &[]), "handle in SQLite"),
        (shape("h2", "cy", &[]), "buffered handle"),
    ] {
        assert!(
            matches!(
                registry.add_shape(new),
                Err(RegistryError::DuplicateHandle { .. })
            ),
            "{what}"
        );
    }
    for (new, holder) in [
        (shape("h3", "c1", &[]), "h1"),
        (shape("h3", "c2", &[]), "h2"),
    ] {
        match registry.add_shape(new) {
            Err(RegistryError::DuplicateComparable { existing }) => assert_eq!(existing, holder),
            other => panic!("expected a duplicate comparable, got {other:?}"),
        }
    }
    assert!(matches!(
        registry.remove_shape("h9"),
        Err(RegistryError::UnknownHandle { .. })
    ));
    assert!(matches!(
        registry.mark_snapshot_complete("h9"),
        Err(RegistryError::UnknownHandle { .. })
    ));
    assert_eq!(registry.count_shapes().expect("count"), 2);
    assert_eq!(
        registry.stats().last_op_key,
        2,
        "refused ops are not logged"
    );
}

#[test]
fn re_adding_a_comparable_while_its_removal_is_buffered_is_visible_at_once() {
    // add h1(C) -> remove h1 -> add h2(C), with a flush after every prefix.
    for flush_after in 0..=3 {
        let dir = tempfile::tempdir().expect("tempdir");
        let (registry, _) =
            ShapeRegistry::open(dir.path(), config(SyncPolicy::None)).expect("open");
        let steps: [&dyn Fn(&ShapeRegistry); 3] = [
            &|r| {
                r.add_shape(shape("h1", "C", &[5])).expect("add h1");
            },
            &|r| {
                r.remove_shape("h1").expect("remove h1");
            },
            &|r| {
                r.add_shape(shape("h2", "C", &[5])).expect("add h2");
            },
        ];
        for (index, step) in steps.iter().enumerate() {
            step(&registry);
            if index + 1 == flush_after {
                registry.flush().expect("flush");
            }
            let expected = match index {
                0 => Some("h1".to_string()),
                1 => None,
                _ => Some("h2".to_string()),
            };
            assert_eq!(registry.handle_for_shape(b"C").expect("read"), expected);
        }
        assert_eq!(
            registry.handles_for_relations(&[5]).expect("read"),
            vec!["h2"]
        );
        registry.flush().expect("flush");
        assert_eq!(
            registry.handle_for_shape(b"C").expect("read"),
            Some("h2".into())
        );
        assert_eq!(handles(&registry), vec!["h2"]);
        assert_eq!(registry.count_shapes().expect("count"), 1);
    }
}

#[test]
fn snapshot_marks_reset_and_the_boot_sweep() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (registry, _) = ShapeRegistry::open(dir.path(), config(SyncPolicy::None)).expect("open");
    for index in 0..6 {
        registry
            .add_shape(shape(&format!("h{index}"), &format!("c{index}"), &[1]))
            .expect("add");
    }
    registry.flush().expect("flush");
    registry.mark_snapshot_started("h0").expect("mark");
    registry.mark_snapshot_complete("h1").expect("mark");
    registry.mark_snapshot_started("h2").expect("mark");
    registry.flush().expect("flush");
    registry.mark_snapshot_complete("h2").expect("mark");
    assert!(registry.snapshot_started("h0").expect("read"));
    assert!(!registry.snapshot_complete("h0").expect("read"));
    assert!(registry.snapshot_complete("h2").expect("read"));
    assert!(registry.snapshot_started("h2").expect("read"));
    assert!(!registry.snapshot_started("h3").expect("read"));

    let (removed, remaining) = registry.remove_incomplete_shapes().expect("sweep");
    assert_eq!(removed, vec!["h0", "h3", "h4", "h5"]);
    assert_eq!(remaining, 2);
    assert_eq!(handles(&registry), vec!["h1", "h2"]);

    registry.reset().expect("reset");
    assert_eq!(handles(&registry), Vec::<String>::new());
    assert_eq!(registry.count_shapes().expect("count"), 0);
    assert!(!registry.has_handle("h1").expect("read"));
    assert_eq!(registry.handle_for_shape(b"c1").expect("read"), None);
    assert!(
        registry
            .handles_for_relations(&[1])
            .expect("read")
            .is_empty()
    );
    registry
        .add_shape(shape("h1", "c1", &[1]))
        .expect("re-add after reset");
    assert_eq!(handles(&registry), vec!["h1"]);
    registry.close().expect("close");
    drop(registry);
    // A reset that was never flushed still holds after a reopen.
    let (registry, _) = ShapeRegistry::open(dir.path(), config(SyncPolicy::None)).expect("reopen");
    assert_eq!(handles(&registry), vec!["h1"]);
    assert_eq!(registry.count_shapes().expect("count"), 1);
}

#[test]
fn least_recently_used_orders_by_last_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (registry, _) = ShapeRegistry::open(dir.path(), config(SyncPolicy::None)).expect("open");
    for index in 0..4 {
        registry
            .add_shape(shape(&format!("h{index}"), &format!("c{index}"), &[]))
            .expect("add");
        std::thread::sleep(Duration::from_millis(2));
    }
    registry.shape_for_handle("h0").expect("read");
    let lru: Vec<String> = registry
        .least_recently_used(2)
        .into_iter()
        .map(|(handle, _)| handle)
        .collect();
    assert_eq!(lru, vec!["h1", "h2"]);
    assert!(registry.least_recently_used(0).is_empty());
}

/// 1 200 shapes, more than a listing page: the even ones flushed, the odd ones buffered, and
/// a buffered removal of every third. Returns the live handles in order.
fn fill_half_flushed_with_removals(registry: &ShapeRegistry) -> Vec<String> {
    for index in (0..1200).step_by(2) {
        registry
            .add_shape(shape(&format!("h{index:05}"), &format!("c{index}"), &[]))
            .expect("add");
    }
    registry.flush().expect("flush");
    for index in (1..1200).step_by(2) {
        registry
            .add_shape(shape(&format!("h{index:05}"), &format!("c{index}"), &[]))
            .expect("add");
    }
    for index in (0..1200).step_by(3) {
        registry
            .remove_shape(&format!("h{index:05}"))
            .expect("remove");
    }
    let expected: Vec<String> = (0..1200)
        .filter(|index| index % 3 != 0)
        .map(|index| format!("h{index:05}"))
        .collect();
    expected
}

#[test]
fn a_listing_larger_than_a_page_merges_buffer_and_sqlite_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (registry, _) = ShapeRegistry::open(dir.path(), config(SyncPolicy::None)).expect("open");
    let expected = fill_half_flushed_with_removals(&registry);
    assert_eq!(handles(&registry), expected);
    assert_eq!(
        registry.count_shapes().expect("count"),
        expected.len() as u64
    );
    registry.flush().expect("flush");
    assert_eq!(handles(&registry), expected);
}

/// Flushes on another thread and fails the test if that does not return in time (a listing
/// that kept the flusher out of the overlay would hang it for ever).
fn flush_or_fail(registry: &Arc<ShapeRegistry>) {
    let flushing = Arc::clone(registry);
    within(
        Duration::from_secs(60),
        "a flush with listings open",
        move || flushing.flush(),
    )
    .expect("flush");
}

#[test]
fn listings_kept_open_across_flushes_neither_hold_up_the_flusher_nor_miss_shapes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (registry, _) = ShapeRegistry::open(dir.path(), config(SyncPolicy::None)).expect("open");
    let registry = Arc::new(registry);
    let expected = fill_half_flushed_with_removals(&registry);

    // Two overlapping listings, each part-way through, while the buffered half moves into
    // SQLite (and out of the overlay) and more shapes arrive, twice over.
    let mut first = registry.list_shapes();
    let mut second = registry.list_shapes();
    let mut listed = [Vec::new(), Vec::new()];
    for round in 0..3 {
        for (listing, into) in [&mut first, &mut second].into_iter().zip(&mut listed) {
            into.extend(
                listing
                    .by_ref()
                    .take(150)
                    .map(|shape| shape.expect("list").handle),
            );
        }
        registry
            .add_shape(shape(&format!("z{round}"), &format!("zc{round}"), &[]))
            .expect("add during the listing");
        flush_or_fail(&registry);
    }
    for (listing, into) in [first, second].into_iter().zip(&mut listed) {
        into.extend(listing.map(|shape| shape.expect("list").handle));
    }
    for listed in listed {
        assert!(
            listed.windows(2).all(|pair| pair[0] < pair[1]),
            "ordered by handle, each once"
        );
        // Shapes added while it ran may or may not show; every other live one does.
        let untouched: Vec<String> = listed
            .into_iter()
            .filter(|handle| handle.starts_with('h'))
            .collect();
        assert_eq!(untouched, expected);
    }
}

#[test]
fn a_listing_open_while_a_buffered_reset_is_flushed_lists_what_followed_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (registry, _) = ShapeRegistry::open(dir.path(), config(SyncPolicy::None)).expect("open");
    let registry = Arc::new(registry);
    for index in 0..600 {
        registry
            .add_shape(shape(&format!("a{index:05}"), &format!("ca{index}"), &[]))
            .expect("add");
    }
    registry.flush().expect("flush");
    registry.reset().expect("reset");
    let after_reset: Vec<String> = (0..600).map(|index| format!("b{index:05}")).collect();
    for handle in &after_reset {
        registry
            .add_shape(shape(handle, &format!("c{handle}"), &[]))
            .expect("add");
    }
    let mut listing = registry.list_shapes();
    let mut listed: Vec<String> = listing
        .by_ref()
        .take(5)
        .map(|shape| shape.expect("list").handle)
        .collect();
    // The reset and every add after it leave the overlay: SQLite alone has them now.
    flush_or_fail(&registry);
    listed.extend(listing.map(|shape| shape.expect("list").handle));
    assert_eq!(listed, after_reset);
}
