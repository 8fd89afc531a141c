//! The demo's workload, deterministic per writer: which shapes writer `w` adds, and when it
//! marks their snapshots and removes some of them. Because every writer's sequence of steps
//! is fixed, a parent process that knows the last step a child acknowledged knows exactly
//! which ops must have survived a crash (every acknowledged one), which one may have (the one
//! in flight), and which cannot exist (every later one).
//!
//! Shapes look like a sync server's after a redeploy: a ~300-byte definition, a 32-byte
//! comparable, two relations.

use std::collections::BTreeMap;

use walbuf::{NewShape, Relation, SnapshotState};

/// Bytes of each shape definition.
pub const SHAPE_BYTES: usize = 300;
/// Bytes of each comparable.
pub const COMPARABLE_BYTES: usize = 32;
/// Table oids the shapes read (the first relation of each shape is one of these).
const ITEM_TABLES: u32 = 64;
/// Oid of the first items table (relation 1) and of the first tenants table (relation 2).
const ITEMS_OID: u32 = 16_384;
const TENANTS_OID: u32 = 24_576;
/// Snapshot marks and removals, as `(every, offset, delay)`: shape `i` with
/// `i % every == offset` gets the step `delay` adds after its own add.
const STARTED: (u32, u32, u32) = (3, 0, 2);
const COMPLETE: (u32, u32, u32) = (3, 0, 4);
const REMOVED: (u32, u32, u32) = (10, 5, 6);

/// One op of a writer: each names the writer's shape it is about by its index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Add shape `i`.
    Add(u32),
    /// Mark shape `i`'s snapshot started.
    MarkStarted(u32),
    /// Mark shape `i`'s snapshot complete.
    MarkComplete(u32),
    /// Remove shape `i`.
    Remove(u32),
}

impl Step {
    /// The index of the shape the step is about.
    #[must_use]
    pub fn index(self) -> u32 {
        match self {
            Self::Add(index)
            | Self::MarkStarted(index)
            | Self::MarkComplete(index)
            | Self::Remove(index) => index,
        }
    }

    /// A short name (`add`, `started`, `complete`, `remove`).
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Add(_) => "add",
            Self::MarkStarted(_) => "started",
            Self::MarkComplete(_) => "complete",
            Self::Remove(_) => "remove",
        }
    }

    /// What the shape's state is after this step, given what it was before (`None`: absent).
    #[must_use]
    pub fn apply(self, before: Option<SnapshotState>) -> Option<SnapshotState> {
        match self {
            Self::Add(_) => Some(SnapshotState::NotStarted),
            Self::MarkStarted(_) => before.map(|state| state.max(SnapshotState::Started)),
            Self::MarkComplete(_) => before.map(|_| SnapshotState::Complete),
            Self::Remove(_) => None,
        }
    }
}

/// Whether shape `index` is ever removed (readers only check shapes that never are).
#[must_use]
pub fn is_removed_later(index: u32) -> bool {
    index % REMOVED.0 == REMOVED.1
}

/// The steps of one writer, in order: `Add(i)` followed by the marks and removals due after
/// it, for `i` in `0..shapes`.
#[derive(Debug, Clone)]
pub struct Plan {
    next_add: u32,
    shapes: u32,
    due: Vec<Step>,
}

impl Plan {
    /// The steps of a writer that adds `shapes` shapes (`u32::MAX`: as many as it can).
    #[must_use]
    pub fn new(shapes: u32) -> Self {
        Self {
            next_add: 0,
            shapes,
            due: Vec::new(),
        }
    }
}

impl Iterator for Plan {
    type Item = Step;

    fn next(&mut self) -> Option<Step> {
        if let Some(step) = self.due.pop() {
            return Some(step);
        }
        if self.next_add >= self.shapes {
            return None;
        }
        let index = self.next_add;
        self.next_add += 1;
        // Pushed in reverse: popped removal last.
        let due = |(every, offset, delay): (u32, u32, u32)| {
            index
                .checked_sub(delay)
                .filter(|earlier| earlier % every == offset)
        };
        if let Some(earlier) = due(REMOVED) {
            self.due.push(Step::Remove(earlier));
        }
        if let Some(earlier) = due(COMPLETE) {
            self.due.push(Step::MarkComplete(earlier));
        }
        if let Some(earlier) = due(STARTED) {
            self.due.push(Step::MarkStarted(earlier));
        }
        Some(Step::Add(index))
    }
}

/// The handle of writer `writer`'s shape `index`, e.g. `w3-0000042`.
#[must_use]
pub fn handle(writer: u32, index: u32) -> String {
    format!("w{writer}-{index:07}")
}

/// The writer and index a demo handle names.
#[must_use]
pub fn parse_handle(handle: &str) -> Option<(u32, u32)> {
    let (writer, index) = handle.strip_prefix('w')?.split_once('-')?;
    Some((writer.parse().ok()?, index.parse().ok()?))
}

/// splitmix64: a bijection of u64, so distinct inputs give distinct outputs.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn identity(writer: u32, index: u32) -> u64 {
    (u64::from(writer) << 32) | u64::from(index)
}

/// The comparable of a shape: 32 bytes, distinct for every `(writer, index)` (the first 8
/// already are).
#[must_use]
pub fn comparable(writer: u32, index: u32) -> Vec<u8> {
    let mut state = identity(writer, index);
    let mut bytes = Vec::with_capacity(COMPARABLE_BYTES);
    for _ in 0..COMPARABLE_BYTES / 8 {
        state = mix(state);
        bytes.extend_from_slice(&state.to_le_bytes());
    }
    bytes
}

/// The hash of a shape.
#[must_use]
pub fn hash(writer: u32, index: u32) -> i64 {
    mix(identity(writer, index) ^ 0x5348_4150_4548_4153).cast_signed()
}

/// The shape's relations: one of the items tables and the writer's tenants table.
#[must_use]
pub fn relations(writer: u32, index: u32) -> Vec<Relation> {
    let table = index % ITEM_TABLES;
    vec![
        Relation {
            oid: ITEMS_OID + table,
            schema: "public".into(),
            table: format!("items_{table}").into(),
        },
        Relation {
            oid: TENANTS_OID + writer,
            schema: "public".into(),
            table: format!("tenants_{writer}").into(),
        },
    ]
}

/// The serialized definition: a JSON-like text padded to [`SHAPE_BYTES`].
#[must_use]
pub fn definition(writer: u32, index: u32) -> Vec<u8> {
    let table = index % ITEM_TABLES;
    let mut text = format!(
        r#"{{"root_table":"public.items_{table}","where":"tenant_id = {writer} AND (id % 97) = {}","columns":["id","tenant_id","title","body","status","updated_at"],"replica":"default","log_mode":"changes_only","params":{{"1":"{index}"}}}}"#,
        index % 97
    );
    text.truncate(SHAPE_BYTES);
    let mut bytes = text.into_bytes();
    bytes.resize(SHAPE_BYTES, b' ');
    bytes
}

/// The shape writer `writer` adds as its `index`-th.
#[must_use]
pub fn new_shape(writer: u32, index: u32) -> NewShape {
    NewShape {
        handle: handle(writer, index),
        shape: definition(writer, index),
        comparable: comparable(writer, index),
        hash: hash(writer, index),
        relations: relations(writer, index),
    }
}

/// What a writer's steps may have left of each of its shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allowed {
    /// The state after every acknowledged step (`None`: absent).
    pub acknowledged: Option<SnapshotState>,
    /// The state if the step in flight (submitted, not acknowledged) also took effect.
    pub in_flight: Option<Option<SnapshotState>>,
}

impl Allowed {
    /// Whether `state` is one the shape may be in.
    #[must_use]
    pub fn allows(&self, state: Option<SnapshotState>) -> bool {
        state == self.acknowledged || self.in_flight == Some(state)
    }

    /// Whether `state` shows the step in flight took effect (and differs from without it).
    #[must_use]
    pub fn shows_in_flight(&self, state: Option<SnapshotState>) -> bool {
        self.in_flight
            .is_some_and(|with| with != self.acknowledged && with == state)
    }
}

/// What every writer's shapes must (or may) be after some steps were acknowledged: keyed by
/// `(writer, index)`. Shapes of no key were never added and must be absent.
pub type Expectation = BTreeMap<(u32, u32), Allowed>;

/// The expectation after writer `w` had `acknowledged[w]` steps acknowledged, and — when
/// `in_flight` — possibly the next one too.
#[must_use]
pub fn expectation(acknowledged: &[u64], in_flight: bool) -> Expectation {
    let mut expected = Expectation::new();
    for (writer, &count) in (0_u32..).zip(acknowledged) {
        let mut plan = Plan::new(u32::MAX);
        let mut states: BTreeMap<u32, Option<SnapshotState>> = BTreeMap::new();
        for step in plan
            .by_ref()
            .take(usize::try_from(count).unwrap_or(usize::MAX))
        {
            let state = states.entry(step.index()).or_default();
            *state = step.apply(*state);
        }
        for (index, state) in &states {
            expected.insert(
                (writer, *index),
                Allowed {
                    acknowledged: *state,
                    in_flight: None,
                },
            );
        }
        if in_flight && let Some(step) = plan.next() {
            let before = states.get(&step.index()).copied().flatten();
            expected.insert(
                (writer, step.index()),
                Allowed {
                    acknowledged: before,
                    in_flight: Some(step.apply(before)),
                },
            );
        }
    }
    expected
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_mark_before_complete_and_remove_after_add() {
        let steps: Vec<Step> = Plan::new(30).collect();
        for (position, step) in steps.iter().enumerate() {
            let before = &steps[..position];
            match step {
                Step::Add(index) => assert!(!before.contains(&Step::Add(*index))),
                Step::MarkStarted(index) | Step::Remove(index) => {
                    assert!(before.contains(&Step::Add(*index)), "{step:?}");
                }
                Step::MarkComplete(index) => {
                    assert!(before.contains(&Step::MarkStarted(*index)), "{step:?}");
                }
            }
        }
        assert_eq!(steps[..3], [Step::Add(0), Step::Add(1), Step::Add(2)]);
        assert!(steps.contains(&Step::Remove(5)) && steps.contains(&Step::Remove(15)));
        assert!(!steps.contains(&Step::Remove(6)));
    }

    #[test]
    fn shapes_have_the_demo_sizes_and_distinct_comparables() {
        let shape = new_shape(3, 42);
        assert_eq!(shape.handle, "w3-0000042");
        assert_eq!(parse_handle(&shape.handle), Some((3, 42)));
        assert_eq!(shape.shape.len(), SHAPE_BYTES);
        assert_eq!(shape.comparable.len(), COMPARABLE_BYTES);
        assert_eq!(shape.relations.len(), 2);
        assert_ne!(comparable(3, 42), comparable(42, 3));
        assert_eq!(parse_handle("x1-2"), None);
    }

    #[test]
    fn expectation_allows_the_step_in_flight() {
        // Writer 0: steps Add(0), Add(1), Add(2), MarkStarted(0) acknowledged; Add(3) maybe.
        let expected = expectation(&[4], true);
        let started = Some(SnapshotState::Started);
        assert_eq!(expected[&(0, 0)].acknowledged, started);
        assert!(expected[&(0, 0)].in_flight.is_none());
        let maybe = expected[&(0, 3)];
        assert!(maybe.allows(None) && maybe.allows(Some(SnapshotState::NotStarted)));
        assert!(maybe.shows_in_flight(Some(SnapshotState::NotStarted)));
        assert!(!expected.contains_key(&(0, 4)));
        let exact = expectation(&[4], false);
        assert!(!exact.contains_key(&(0, 3)));
    }
}
