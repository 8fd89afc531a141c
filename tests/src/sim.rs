//! [`SimStorage`]: a simulated disk for crash and fault tests, modelled on redb's
//! crash-consistency backend.
//!
//! # The model
//! Every file (an *inode*) has two byte arrays of the same length:
//! * **written** — what reads return: the page cache, updated by every write;
//! * **durable** — what is on the platter, updated only by a successful
//!   [`SegmentFile::sync`] of a byte range (exactly that range), by [`Storage::create`] (the
//!   allocated zeros are synced, as `FsStorage` does with `fallocate` + `fsync`), by
//!   [`Storage::open`] extending a short file, and by [`Storage::erase_tail`] (exactly the
//!   erased range — the trait promises no more).
//!
//! A *sector* ([`DEFAULT_SECTOR_BYTES`] by default) is *dirty* when its written and durable
//! bytes differ. The directory has a current namespace (name → inode) and a durable one;
//! creates, renames and removes change the current one and are recorded, and only
//! [`Storage::sync_directory`] makes the current namespace durable.
//!
//! # Crashes
//! * [`SimDisk::process_crash_image`]: the process dies, the kernel keeps going — everything
//!   written survives, and what was not durable is still not durable (the page cache is kept).
//! * [`SimDisk::power_loss_image`]: the machine loses power. Each dirty sector's fate is decided
//!   by [`SectorLoss`], and the directory by [`DirectoryLoss`]. The image is a fresh disk whose
//!   content is all durable.
//!
//! Assumption about the disk (the weakest one an append-only log with records smaller than a
//! sector can survive): a sector write that is cut by a power loss may leave anything from the
//! first byte whose content changed to the end of the sector, but never damages the bytes
//! before it. Bytes that had been made durable and not overwritten stay as they are.
//!
//! # Faults and observation
//! [`SimDisk::fail_syncs`] and [`SimDisk::fail_directory_syncs`] make syncs fail with `EIO`
//! (nothing in the range becomes durable); [`SimDisk::set_capacity_bytes`] makes `create` fail
//! with `ENOSPC` once the files would exceed it; [`SimDisk::counters`] counts operations; and
//! [`SimDisk::set_hook`] calls a function before and after every persistence point (sync,
//! directory sync, create, rename, remove, erase), with a [`Snapshot`] from which power-loss
//! images can be built at exactly that moment.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::Mutex;
use rand::Rng;
use walbuf::storage::{Region, RegionCursor, SegmentFile, Storage};

/// Sector size of a new disk: the unit in which unsynced bytes survive or are lost.
pub const DEFAULT_SECTOR_BYTES: u64 = 4096;

/// `EIO`, the error of a failed sync.
const EIO: i32 = 5;
/// `ENOSPC`, the error of a create on a full disk.
const ENOSPC: i32 = 28;

/// What happens to the dirty sectors (written but not durable) of every file on power loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SectorLoss {
    /// Every unsynced byte is lost: dirty sectors read as their durable content.
    DropUnsynced,
    /// Each dirty sector is independently kept (its written content reached the disk) or
    /// dropped: the kernel writes pages back in any order.
    KeepRandom,
    /// Per file, the dirty sectors in offset order are kept up to a random sector boundary
    /// and dropped after it: a sequential write-back cut short.
    TornAtSector,
    /// Each dirty sector is independently kept, dropped, or garbled: from its first byte that
    /// changed since it was last durable to the end of the sector, random bytes.
    Garbage,
}

impl SectorLoss {
    /// Every variant.
    pub const ALL: [Self; 4] = [
        Self::DropUnsynced,
        Self::KeepRandom,
        Self::TornAtSector,
        Self::Garbage,
    ];
}

/// What happens on power loss to the directory operations done since the last directory
/// sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DirectoryLoss {
    /// All undone: files created since are missing, renames reverted, removed files back.
    Undone,
    /// All reached the disk anyway.
    Kept,
    /// A random prefix of them reached the disk (a journaling filesystem commits metadata in
    /// order).
    RandomPrefix,
    /// Each reached the disk or not, independently: all POSIX promises without a directory
    /// sync.
    RandomSubset,
}

impl DirectoryLoss {
    /// The variants that keep directory operations in order (what ext4 and other
    /// journaling filesystems do in practice).
    pub const IN_ORDER: [Self; 3] = [Self::Undone, Self::Kept, Self::RandomPrefix];
    /// Every variant.
    pub const ALL: [Self; 4] = [
        Self::Undone,
        Self::Kept,
        Self::RandomPrefix,
        Self::RandomSubset,
    ];
}

/// How a power loss treats file data and the directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PowerLoss {
    /// The fate of dirty sectors.
    pub sectors: SectorLoss,
    /// The fate of directory operations not yet made durable.
    pub directory: DirectoryLoss,
}

impl PowerLoss {
    /// The harshest deterministic loss: every unsynced byte and directory operation lost.
    pub const DROP_ALL: Self = Self {
        sectors: SectorLoss::DropUnsynced,
        directory: DirectoryLoss::Undone,
    };

    /// Every combination of [`SectorLoss`] and [`DirectoryLoss`].
    #[must_use]
    pub fn all() -> Vec<Self> {
        Self::combinations(&DirectoryLoss::ALL)
    }

    /// Every [`SectorLoss`] with every directory loss in `directory`.
    #[must_use]
    pub fn combinations(directory: &[DirectoryLoss]) -> Vec<Self> {
        SectorLoss::ALL
            .iter()
            .flat_map(|&sectors| {
                directory
                    .iter()
                    .map(move |&directory| Self { sectors, directory })
            })
            .collect()
    }
}

/// When injected sync failures strike. Calls are numbered from 1 in the order they reach the
/// disk (see [`SimCounters`]); the numbering counts failed calls too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncFault {
    /// No failures.
    Never,
    /// Only call number `at` fails.
    Once {
        /// The failing call's number.
        at: u64,
    },
    /// Call number `at` and every later one fail.
    From {
        /// The first failing call's number.
        at: u64,
    },
}

impl SyncFault {
    fn strikes(self, call: u64) -> bool {
        match self {
            Self::Never => false,
            Self::Once { at } => call == at,
            Self::From { at } => call >= at,
        }
    }
}

/// Operation counts of a disk since it was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SimCounters {
    /// Calls of [`SegmentFile::sync`] (failed ones included).
    pub syncs: u64,
    /// Syncs that failed by injection.
    pub failed_syncs: u64,
    /// Calls of [`Storage::sync_directory`] (failed ones included).
    pub directory_syncs: u64,
    /// Directory syncs that failed by injection.
    pub failed_directory_syncs: u64,
    /// Successful creates.
    pub creates: u64,
    /// Creates refused for lack of space.
    pub creates_refused: u64,
    /// Successful renames.
    pub renames: u64,
    /// Successful removes.
    pub removes: u64,
    /// Bytes written through segments.
    pub bytes_written: u64,
}

/// The kind of a persistence point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PersistenceOp {
    /// A sync of `[offset, offset + len_bytes)` of `file`.
    Sync {
        /// The file's current name (empty if it has none any more).
        file: String,
        /// First byte.
        offset: u64,
        /// Bytes.
        len_bytes: u64,
    },
    /// A directory sync.
    DirectorySync,
    /// A file created (its entry is not durable yet).
    Create {
        /// The new name.
        file: String,
    },
    /// A rename.
    Rename {
        /// Old name.
        from: String,
        /// New name.
        to: String,
    },
    /// A remove.
    Remove {
        /// The removed name.
        file: String,
    },
    /// A tail erased (and the erased range made durable).
    EraseTail {
        /// The file.
        file: String,
        /// First erased byte.
        offset: u64,
    },
}

/// Whether the hook runs before or after the operation takes effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// The operation has not happened yet.
    Before,
    /// The operation has happened (or failed, see [`PersistencePoint::failed`]).
    After,
}

/// One observed persistence point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersistencePoint {
    /// Number of the operation, counting from 1 over every persistence operation of this
    /// disk (both phases of one operation share it).
    pub sequence: u64,
    /// What the operation is.
    pub op: PersistenceOp,
    /// Before or after it.
    pub phase: Phase,
    /// In the `After` phase: whether it failed (an injected fault).
    pub failed: bool,
}

/// A function called at every persistence point, with the disk's lock held: it must not call
/// methods of [`SimDisk`] or [`SimStorage`] (that would deadlock) — it gets a [`Snapshot`]
/// instead.
pub type Hook = Box<dyn FnMut(&PersistencePoint, &Snapshot<'_>) + Send>;

#[derive(Debug, Clone)]
struct Inode {
    written: Vec<u8>,
    durable: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum DirectoryOp {
    Link { name: String, inode: usize },
    Rename { from: String, to: String },
    Unlink { name: String },
}

fn apply(names: &mut BTreeMap<String, usize>, op: &DirectoryOp) {
    match op {
        DirectoryOp::Link { name, inode } => {
            names.insert(name.clone(), *inode);
        }
        DirectoryOp::Rename { from, to } => {
            if let Some(inode) = names.remove(from) {
                names.insert(to.clone(), inode);
            }
        }
        DirectoryOp::Unlink { name } => {
            names.remove(name);
        }
    }
}

/// The state of a disk, shared by its storages, segments and handles.
#[derive(Debug, Clone)]
struct DiskState {
    sector_bytes: u64,
    inodes: Vec<Inode>,
    names: BTreeMap<String, usize>,
    durable_names: BTreeMap<String, usize>,
    /// Directory operations since the last directory sync, in order.
    pending: Vec<DirectoryOp>,
    capacity_bytes: Option<u64>,
    sync_fault: SyncFault,
    directory_sync_fault: SyncFault,
    counters: SimCounters,
    operations: u64,
}

impl DiskState {
    fn new(sector_bytes: u64) -> Self {
        assert!(sector_bytes > 0, "sector size must be positive");
        Self {
            sector_bytes,
            inodes: Vec::new(),
            names: BTreeMap::new(),
            durable_names: BTreeMap::new(),
            pending: Vec::new(),
            capacity_bytes: None,
            sync_fault: SyncFault::Never,
            directory_sync_fault: SyncFault::Never,
            counters: SimCounters::default(),
            operations: 0,
        }
    }

    fn used_bytes(&self) -> u64 {
        self.names
            .values()
            .filter_map(|&inode| self.inodes.get(inode))
            .map(|inode| inode.written.len() as u64)
            .sum()
    }

    fn inode_of(&self, name: &str) -> io::Result<usize> {
        self.names.get(name).copied().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("sim:/{name} does not exist"),
            )
        })
    }

    fn name_of(&self, inode: usize) -> String {
        self.names
            .iter()
            .find(|&(_, &candidate)| candidate == inode)
            .map(|(name, _)| name.clone())
            .unwrap_or_default()
    }

    fn link(&mut self, name: &str, inode: usize) {
        self.names.insert(name.to_owned(), inode);
        self.pending.push(DirectoryOp::Link {
            name: name.to_owned(),
            inode,
        });
    }

    /// A fresh disk holding what a power cut leaves of this one.
    fn power_loss_image(&self, how: PowerLoss, rng: &mut dyn rand::RngCore) -> DiskState {
        let mut names = self.durable_names.clone();
        match how.directory {
            DirectoryLoss::Undone => {}
            DirectoryLoss::Kept => names.clone_from(&self.names),
            DirectoryLoss::RandomPrefix => {
                let kept = rng.random_range(0..=self.pending.len());
                for op in &self.pending[..kept] {
                    apply(&mut names, op);
                }
            }
            DirectoryLoss::RandomSubset => {
                for op in &self.pending {
                    if rng.random_bool(0.5) {
                        apply(&mut names, op);
                    }
                }
            }
        }
        let mut image = DiskState::new(self.sector_bytes);
        let mut renumbered: BTreeMap<usize, usize> = BTreeMap::new();
        for (name, &inode) in &names {
            let new_inode = match renumbered.get(&inode) {
                Some(&new_inode) => new_inode,
                None => {
                    let content = self.surviving_bytes(inode, how.sectors, rng);
                    image.inodes.push(Inode {
                        written: content.clone(),
                        durable: content,
                    });
                    let new_inode = image.inodes.len() - 1;
                    renumbered.insert(inode, new_inode);
                    new_inode
                }
            };
            image.names.insert(name.clone(), new_inode);
        }
        image.durable_names = image.names.clone();
        image
    }

    /// The bytes of `inode` on the platter after a power cut.
    fn surviving_bytes(
        &self,
        inode: usize,
        loss: SectorLoss,
        rng: &mut dyn rand::RngCore,
    ) -> Vec<u8> {
        let Some(inode) = self.inodes.get(inode) else {
            return Vec::new();
        };
        let sector = self.sector_bytes as usize;
        let mut bytes = inode.durable.clone();
        let dirty: Vec<usize> = (0..inode.written.len().div_ceil(sector))
            .filter(|&index| {
                let range = index * sector..((index + 1) * sector).min(inode.written.len());
                inode.written[range.clone()] != inode.durable[range]
            })
            .collect();
        let torn_after = rng.random_range(0..=dirty.len());
        for (position, &index) in dirty.iter().enumerate() {
            let range = index * sector..((index + 1) * sector).min(inode.written.len());
            // 0: dropped (durable content stays), 1: kept, 2: garbled.
            let fate = match loss {
                SectorLoss::DropUnsynced => 0,
                SectorLoss::KeepRandom => rng.random_range(0..2),
                SectorLoss::TornAtSector => u8::from(position < torn_after),
                SectorLoss::Garbage => rng.random_range(0..3),
            };
            match fate {
                0 => {}
                1 => bytes[range.clone()].copy_from_slice(&inode.written[range]),
                _ => {
                    let first_changed = range
                        .clone()
                        .find(|&at| inode.written[at] != inode.durable[at])
                        .unwrap_or(range.start);
                    rng.fill_bytes(&mut bytes[first_changed..range.end]);
                }
            }
        }
        bytes
    }
}

struct Shared {
    state: Mutex<Inner>,
    /// Microseconds each segment sync takes before it touches the disk (device latency).
    sync_delay_us: std::sync::atomic::AtomicU64,
}

struct Inner {
    disk: DiskState,
    hook: Option<Hook>,
}

impl Inner {
    /// Runs `op` as persistence operation `what`, calling the hook before and after it.
    fn persist<T>(
        &mut self,
        what: PersistenceOp,
        op: impl FnOnce(&mut DiskState) -> io::Result<T>,
    ) -> io::Result<T> {
        self.disk.operations += 1;
        let mut point = PersistencePoint {
            sequence: self.disk.operations,
            op: what,
            phase: Phase::Before,
            failed: false,
        };
        if let Some(hook) = self.hook.as_mut() {
            hook(&point, &Snapshot { disk: &self.disk });
        }
        let result = op(&mut self.disk);
        if let Some(hook) = self.hook.as_mut() {
            point.phase = Phase::After;
            point.failed = result.is_err();
            hook(&point, &Snapshot { disk: &self.disk });
        }
        result
    }
}

/// A read-only view of a disk at one moment, handed to a [`Hook`].
pub struct Snapshot<'a> {
    disk: &'a DiskState,
}

impl fmt::Debug for Snapshot<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Snapshot")
            .field("files", &self.disk.names.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Snapshot<'_> {
    /// The disk a power cut at this moment would leave (see [`SimDisk::power_loss_image`]).
    #[must_use]
    pub fn power_loss_image(&self, how: PowerLoss, rng: &mut impl Rng) -> SimStorage {
        SimStorage::from_state(self.disk.power_loss_image(how, rng))
    }

    /// The disk a process crash at this moment would leave (see
    /// [`SimDisk::process_crash_image`]).
    #[must_use]
    pub fn process_crash_image(&self) -> SimStorage {
        SimStorage::from_state(self.disk.clone().without_faults())
    }

    /// Names in the current directory.
    #[must_use]
    pub fn file_names(&self) -> Vec<String> {
        self.disk.names.keys().cloned().collect()
    }
}

impl DiskState {
    fn without_faults(mut self) -> Self {
        self.capacity_bytes = None;
        self.sync_fault = SyncFault::Never;
        self.directory_sync_fault = SyncFault::Never;
        self.counters = SimCounters::default();
        self.operations = 0;
        self
    }
}

/// A handle on a simulated disk that stays usable after a [`walbuf::Log`] took ownership of
/// the [`SimStorage`]: images, faults, counters, hooks.
#[derive(Clone)]
pub struct SimDisk {
    shared: Arc<Shared>,
}

impl fmt::Debug for SimDisk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.shared.state.lock();
        f.debug_struct("SimDisk")
            .field("files", &inner.disk.names.keys().collect::<Vec<_>>())
            .field("counters", &inner.disk.counters)
            .finish_non_exhaustive()
    }
}

impl SimDisk {
    /// What a power cut now would leave: a fresh disk (no faults, no hook, fresh counters)
    /// whose every byte is durable.
    #[must_use]
    pub fn power_loss_image(&self, how: PowerLoss, rng: &mut impl Rng) -> SimStorage {
        let inner = self.shared.state.lock();
        SimStorage::from_state(inner.disk.power_loss_image(how, rng))
    }

    /// What a process crash now would leave: every written byte and directory operation
    /// survives (the kernel keeps the page cache), and what was not durable is still not
    /// durable. No faults, no hook, fresh counters.
    #[must_use]
    pub fn process_crash_image(&self) -> SimStorage {
        let inner = self.shared.state.lock();
        SimStorage::from_state(inner.disk.clone().without_faults())
    }

    /// Another storage over this same disk (the same page cache): for reopening without a
    /// crash once the previous log is dropped.
    #[must_use]
    pub fn storage(&self) -> SimStorage {
        SimStorage { disk: self.clone() }
    }

    /// Makes segment syncs fail with `EIO` per `fault` (numbered as [`SimCounters::syncs`]).
    /// A failed sync makes nothing durable.
    pub fn fail_syncs(&self, fault: SyncFault) {
        self.shared.state.lock().disk.sync_fault = fault;
    }

    /// Makes directory syncs fail with `EIO` per `fault` (numbered as
    /// [`SimCounters::directory_syncs`]).
    pub fn fail_directory_syncs(&self, fault: SyncFault) {
        self.shared.state.lock().disk.directory_sync_fault = fault;
    }

    /// Makes every segment sync take `delay` (slept without holding the disk's lock) before
    /// it takes effect, like a device's write latency; concurrent writes proceed meanwhile.
    pub fn set_sync_delay(&self, delay: std::time::Duration) {
        let micros = u64::try_from(delay.as_micros()).unwrap_or(u64::MAX);
        self.shared
            .sync_delay_us
            .store(micros, std::sync::atomic::Ordering::Relaxed);
    }

    /// Limits the total size of the files in the directory: a `create` that would exceed it
    /// fails with `ENOSPC`. `None` for no limit.
    pub fn set_capacity_bytes(&self, capacity_bytes: Option<u64>) {
        self.shared.state.lock().disk.capacity_bytes = capacity_bytes;
    }

    /// Bytes taken by the files in the directory.
    #[must_use]
    pub fn used_bytes(&self) -> u64 {
        self.shared.state.lock().disk.used_bytes()
    }

    /// Operation counts so far.
    #[must_use]
    pub fn counters(&self) -> SimCounters {
        self.shared.state.lock().disk.counters
    }

    /// Installs `hook`, called before and after every persistence point (replacing any
    /// earlier one).
    pub fn set_hook(&self, hook: impl FnMut(&PersistencePoint, &Snapshot<'_>) + Send + 'static) {
        self.shared.state.lock().hook = Some(Box::new(hook));
    }

    /// Removes the hook.
    pub fn clear_hook(&self) {
        self.shared.state.lock().hook = None;
    }

    /// Names in the current directory, sorted.
    #[must_use]
    pub fn file_names(&self) -> Vec<String> {
        self.shared
            .state
            .lock()
            .disk
            .names
            .keys()
            .cloned()
            .collect()
    }

    /// Names in the durable directory, sorted.
    #[must_use]
    pub fn durable_file_names(&self) -> Vec<String> {
        self.shared
            .state
            .lock()
            .disk
            .durable_names
            .keys()
            .cloned()
            .collect()
    }

    /// The written content of `name` (what a read returns).
    ///
    /// # Errors
    /// `NotFound`.
    pub fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        let inner = self.shared.state.lock();
        let inode = inner.disk.inode_of(name)?;
        Ok(inner.disk.inodes[inode].written.clone())
    }

    /// The durable content of `name` (what is on the platter).
    ///
    /// # Errors
    /// `NotFound`.
    pub fn read_durable(&self, name: &str) -> io::Result<Vec<u8>> {
        let inner = self.shared.state.lock();
        let inode = inner.disk.inode_of(name)?;
        Ok(inner.disk.inodes[inode].durable.clone())
    }

    /// Disk rot: XORs `mask` into byte `offset` of `name`, both written and durable.
    ///
    /// # Errors
    /// `NotFound`, or the offset is past the end of the file.
    pub fn corrupt(&self, name: &str, offset: u64, mask: u8) -> io::Result<()> {
        let mut inner = self.shared.state.lock();
        let inode = inner.disk.inode_of(name)?;
        let inode = &mut inner.disk.inodes[inode];
        let at =
            usize::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        if at >= inode.written.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "offset past the end of the file",
            ));
        }
        inode.written[at] ^= mask;
        inode.durable[at] ^= mask;
        Ok(())
    }

    /// Replaces the content of `name` (written and durable) with `bytes`, or creates it
    /// with its directory entry durable.
    pub fn put_file(&self, name: &str, bytes: Vec<u8>) {
        let mut inner = self.shared.state.lock();
        let disk = &mut inner.disk;
        let inode = Inode {
            written: bytes.clone(),
            durable: bytes,
        };
        match disk.names.get(name) {
            Some(&index) => disk.inodes[index] = inode,
            None => {
                disk.inodes.push(inode);
                let index = disk.inodes.len() - 1;
                disk.names.insert(name.to_owned(), index);
                disk.durable_names.insert(name.to_owned(), index);
            }
        }
    }
}

/// A simulated log directory implementing [`Storage`]. See the module docs for the model.
#[derive(Clone)]
pub struct SimStorage {
    disk: SimDisk,
}

impl fmt::Debug for SimStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SimStorage").field(&self.disk).finish()
    }
}

impl Default for SimStorage {
    fn default() -> Self {
        Self::new()
    }
}

impl SimStorage {
    /// An empty disk with [`DEFAULT_SECTOR_BYTES`] sectors.
    #[must_use]
    pub fn new() -> Self {
        Self::with_sector_bytes(DEFAULT_SECTOR_BYTES)
    }

    /// An empty disk whose sectors are `sector_bytes` long.
    ///
    /// # Panics
    /// If `sector_bytes` is 0.
    #[must_use]
    pub fn with_sector_bytes(sector_bytes: u64) -> Self {
        Self::from_state(DiskState::new(sector_bytes))
    }

    /// A disk holding `files` (name, content), all durable.
    #[must_use]
    pub fn from_files<I, S>(files: I) -> Self
    where
        I: IntoIterator<Item = (S, Vec<u8>)>,
        S: Into<String>,
    {
        let storage = Self::new();
        for (name, bytes) in files {
            storage.disk.put_file(&name.into(), bytes);
        }
        storage
    }

    fn from_state(disk: DiskState) -> Self {
        Self {
            disk: SimDisk {
                shared: Arc::new(Shared {
                    state: Mutex::new(Inner { disk, hook: None }),
                    sync_delay_us: std::sync::atomic::AtomicU64::new(0),
                }),
            },
        }
    }

    /// A handle on the disk that outlives this storage's move into a log.
    #[must_use]
    pub fn disk(&self) -> SimDisk {
        self.disk.clone()
    }

    fn lock(&self) -> parking_lot::MutexGuard<'_, Inner> {
        self.disk.shared.state.lock()
    }
}

impl Storage for SimStorage {
    type Segment = SimSegment;

    fn list(&self) -> io::Result<Vec<String>> {
        Ok(self.lock().disk.names.keys().cloned().collect())
    }

    fn create(&self, name: &str, capacity_bytes: u64) -> io::Result<SimSegment> {
        let len = usize::try_from(capacity_bytes)
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let mut inner = self.lock();
        if inner.disk.names.contains_key(name) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("sim:/{name} already exists"),
            ));
        }
        if let Some(limit) = inner.disk.capacity_bytes
            && inner.disk.used_bytes().saturating_add(capacity_bytes) > limit
        {
            inner.disk.counters.creates_refused += 1;
            return Err(io::Error::from_raw_os_error(ENOSPC));
        }
        let inode = inner.persist(
            PersistenceOp::Create {
                file: name.to_owned(),
            },
            |disk| {
                disk.inodes.push(Inode {
                    written: vec![0; len],
                    durable: vec![0; len],
                });
                let inode = disk.inodes.len() - 1;
                disk.link(name, inode);
                disk.counters.creates += 1;
                Ok(inode)
            },
        )?;
        Ok(SimSegment {
            shared: Arc::clone(&self.disk.shared),
            inode,
            cursor: RegionCursor::new(0, capacity_bytes),
        })
    }

    fn open(&self, name: &str, capacity_bytes: u64, resume_offset: u64) -> io::Result<SimSegment> {
        let len = usize::try_from(capacity_bytes)
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let mut inner = self.lock();
        let inode = inner.disk.inode_of(name)?;
        let file = &mut inner.disk.inodes[inode];
        if file.written.len() < len {
            // Allocated and synced, as `FsStorage::open` does.
            file.written.resize(len, 0);
            file.durable.resize(len, 0);
        }
        Ok(SimSegment {
            shared: Arc::clone(&self.disk.shared),
            inode,
            cursor: RegionCursor::new(resume_offset, capacity_bytes),
        })
    }

    fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        let inner = self.lock();
        let inode = inner.disk.inode_of(name)?;
        Ok(inner.disk.inodes[inode].written.clone())
    }

    fn erase_tail(&self, name: &str, offset: u64, capacity_bytes: u64) -> io::Result<()> {
        let mut inner = self.lock();
        let inode = inner.disk.inode_of(name)?;
        let what = PersistenceOp::EraseTail {
            file: name.to_owned(),
            offset,
        };
        inner.persist(what, |disk| {
            let file = &mut disk.inodes[inode];
            let len = usize::try_from(capacity_bytes)
                .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
            let from = usize::try_from(offset)
                .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
            file.written.resize(len.max(from), 0);
            file.durable.resize(len.max(from), 0);
            file.written[from..].fill(0);
            file.durable[from..].fill(0);
            Ok(())
        })
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let mut inner = self.lock();
        if inner.disk.names.contains_key(to) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("sim:/{to} already exists"),
            ));
        }
        inner.disk.inode_of(from)?;
        let what = PersistenceOp::Rename {
            from: from.to_owned(),
            to: to.to_owned(),
        };
        inner.persist(what, |disk| {
            let op = DirectoryOp::Rename {
                from: from.to_owned(),
                to: to.to_owned(),
            };
            apply(&mut disk.names, &op);
            disk.pending.push(op);
            disk.counters.renames += 1;
            Ok(())
        })
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        let mut inner = self.lock();
        inner.disk.inode_of(name)?;
        inner.persist(
            PersistenceOp::Remove {
                file: name.to_owned(),
            },
            |disk| {
                let op = DirectoryOp::Unlink {
                    name: name.to_owned(),
                };
                apply(&mut disk.names, &op);
                disk.pending.push(op);
                disk.counters.removes += 1;
                Ok(())
            },
        )
    }

    fn sync_directory(&self) -> io::Result<()> {
        let mut inner = self.lock();
        inner.persist(PersistenceOp::DirectorySync, |disk| {
            disk.counters.directory_syncs += 1;
            if disk
                .directory_sync_fault
                .strikes(disk.counters.directory_syncs)
            {
                disk.counters.failed_directory_syncs += 1;
                return Err(io::Error::from_raw_os_error(EIO));
            }
            disk.durable_names.clone_from(&disk.names);
            disk.pending.clear();
            Ok(())
        })
    }

    fn describe(&self, name: &str) -> PathBuf {
        PathBuf::from(format!("sim:/{name}"))
    }
}

impl walbuf_recovery::SegmentSource for SimStorage {
    fn file_names(&self) -> walbuf_recovery::Result<Vec<String>> {
        Ok(self.disk.file_names())
    }

    fn read_file(&self, name: &str) -> walbuf_recovery::Result<Vec<u8>> {
        self.disk
            .read(name)
            .map_err(|source| walbuf_recovery::Error::Io {
                path: self.describe(name),
                source,
            })
    }
}

/// An open file of a [`SimStorage`]; keeps working after its name is renamed or removed.
pub struct SimSegment {
    shared: Arc<Shared>,
    inode: usize,
    cursor: RegionCursor,
}

impl fmt::Debug for SimSegment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimSegment")
            .field("inode", &self.inode)
            .field("cursor", &self.cursor)
            .finish_non_exhaustive()
    }
}

impl SegmentFile for SimSegment {
    fn capacity(&self) -> u64 {
        self.cursor.capacity()
    }

    fn reserve(&self, len_bytes: u64) -> Option<Region> {
        self.cursor.reserve(len_bytes)
    }

    fn write(&self, region: Region, parts: &[&[u8]]) {
        let total: usize = parts.iter().map(|part| part.len()).sum();
        let (offset, _) = self.cursor.check(&region, total);
        let mut inner = self.shared.state.lock();
        inner.disk.counters.bytes_written += total as u64;
        let file = &mut inner.disk.inodes[self.inode];
        let mut at = usize::try_from(offset).expect("a region lies inside the segment");
        for part in parts {
            file.written[at..at + part.len()].copy_from_slice(part);
            at += part.len();
        }
    }

    fn sync(&self, offset: u64, len_bytes: u64) -> io::Result<()> {
        let delay_us = self
            .shared
            .sync_delay_us
            .load(std::sync::atomic::Ordering::Relaxed);
        if delay_us > 0 {
            std::thread::sleep(std::time::Duration::from_micros(delay_us));
        }
        let mut inner = self.shared.state.lock();
        let what = PersistenceOp::Sync {
            file: inner.disk.name_of(self.inode),
            offset,
            len_bytes,
        };
        let inode = self.inode;
        inner.persist(what, |disk| {
            disk.counters.syncs += 1;
            if disk.sync_fault.strikes(disk.counters.syncs) {
                disk.counters.failed_syncs += 1;
                return Err(io::Error::from_raw_os_error(EIO));
            }
            let file = &mut disk.inodes[inode];
            let len = file.written.len() as u64;
            let end = offset.saturating_add(len_bytes).min(len) as usize;
            let start = (offset.min(len) as usize).min(end);
            let (written, durable) = (&file.written, &mut file.durable);
            durable[start..end].copy_from_slice(&written[start..end]);
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    fn write(segment: &SimSegment, bytes: &[u8]) {
        let region = segment.reserve(bytes.len() as u64).expect("fits");
        segment.write(region, &[bytes]);
    }

    #[test]
    fn unsynced_bytes_are_dropped_and_synced_ones_kept() {
        let storage = SimStorage::with_sector_bytes(16);
        let disk = storage.disk();
        let segment = storage.create("a", 64).expect("create");
        storage.sync_directory().expect("dir sync");
        write(&segment, &[1; 20]);
        segment.sync(0, 20).expect("sync");
        write(&segment, &[2; 20]);
        let mut rng = StdRng::seed_from_u64(1);
        let image = disk.power_loss_image(PowerLoss::DROP_ALL, &mut rng).disk();
        let bytes = image.read("a").expect("file survives");
        assert_eq!(&bytes[..20], &[1; 20]);
        assert_eq!(&bytes[20..], &[0; 44][..], "unsynced bytes are lost");
        let crash = disk.process_crash_image().disk();
        assert_eq!(&crash.read("a").expect("file")[20..40], &[2; 20]);
        assert_eq!(
            &crash.read_durable("a").expect("file")[20..40],
            &[0; 20],
            "still not durable"
        );
    }

    #[test]
    fn directory_operations_need_a_directory_sync() {
        let storage = SimStorage::new();
        let disk = storage.disk();
        let _first = storage.create("a", 8).expect("create");
        storage.sync_directory().expect("dir sync");
        let _second = storage.create("b", 8).expect("create");
        storage.rename("a", "c").expect("rename");
        let mut rng = StdRng::seed_from_u64(2);
        let undone = disk.power_loss_image(PowerLoss::DROP_ALL, &mut rng).disk();
        assert_eq!(undone.file_names(), vec!["a".to_owned()]);
        let kept = PowerLoss {
            sectors: SectorLoss::DropUnsynced,
            directory: DirectoryLoss::Kept,
        };
        assert_eq!(
            disk.power_loss_image(kept, &mut rng).disk().file_names(),
            vec!["b".to_owned(), "c".to_owned()]
        );
        storage.remove("c").expect("remove");
        storage.sync_directory().expect("dir sync");
        assert_eq!(
            disk.power_loss_image(PowerLoss::DROP_ALL, &mut rng)
                .disk()
                .file_names(),
            vec!["b".to_owned()]
        );
    }

    #[test]
    fn unordered_directory_loss_keeps_any_subset() {
        let storage = SimStorage::new();
        let disk = storage.disk();
        for name in ["a", "b", "c"] {
            let _file = storage.create(name, 8).expect("create");
        }
        storage.sync_directory().expect("dir sync");
        storage.remove("a").expect("remove");
        storage.remove("b").expect("remove");
        let mut rng = StdRng::seed_from_u64(4);
        let mut outcomes = std::collections::BTreeSet::new();
        let mut prefixes = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let subset = PowerLoss {
                sectors: SectorLoss::DropUnsynced,
                directory: DirectoryLoss::RandomSubset,
            };
            outcomes.insert(disk.power_loss_image(subset, &mut rng).disk().file_names());
            let prefix = PowerLoss {
                directory: DirectoryLoss::RandomPrefix,
                ..subset
            };
            prefixes.insert(disk.power_loss_image(prefix, &mut rng).disk().file_names());
        }
        assert_eq!(outcomes.len(), 4, "{outcomes:?}");
        assert_eq!(
            prefixes.len(),
            3,
            "a prefix never removes b without a: {prefixes:?}"
        );
    }

    #[test]
    fn sector_losses_only_touch_dirty_sectors() {
        let storage = SimStorage::with_sector_bytes(8);
        let disk = storage.disk();
        let segment = storage.create("a", 64).expect("create");
        storage.sync_directory().expect("dir sync");
        write(&segment, &[7; 12]);
        segment.sync(0, 12).expect("sync");
        write(&segment, &[9; 36]);
        let mut rng = StdRng::seed_from_u64(3);
        for how in PowerLoss::all() {
            for _ in 0..20 {
                let bytes = disk
                    .power_loss_image(how, &mut rng)
                    .disk()
                    .read("a")
                    .expect("file");
                assert_eq!(&bytes[..12], &[7; 12], "{how:?}: durable bytes untouched");
                assert_eq!(&bytes[48..], &[0; 16], "{how:?}: clean sectors untouched");
            }
        }
    }

    #[test]
    fn faults_and_capacity() {
        let storage = SimStorage::new();
        let disk = storage.disk();
        disk.set_capacity_bytes(Some(100));
        let segment = storage.create("a", 64).expect("fits");
        let error = storage.create("b", 64).expect_err("full");
        assert_eq!(error.raw_os_error(), Some(ENOSPC));
        disk.fail_syncs(SyncFault::Once { at: 2 });
        write(&segment, &[1; 8]);
        segment.sync(0, 8).expect("first sync");
        write(&segment, &[2; 8]);
        let error = segment.sync(8, 8).expect_err("second sync fails");
        assert_eq!(error.raw_os_error(), Some(EIO));
        assert_eq!(&disk.read_durable("a").expect("file")[8..16], &[0; 8]);
        segment.sync(8, 8).expect("third sync");
        let counters = disk.counters();
        assert_eq!(
            (
                counters.syncs,
                counters.failed_syncs,
                counters.creates_refused
            ),
            (3, 1, 1)
        );
    }

    #[test]
    fn hook_sees_every_point_in_both_phases() {
        let storage = SimStorage::new();
        let disk = storage.disk();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&seen);
        disk.set_hook(move |point, snapshot| {
            sink.lock()
                .push((point.sequence, point.phase, snapshot.file_names()));
        });
        let segment = storage.create("a", 8).expect("create");
        segment.sync(0, 8).expect("sync");
        storage.rename("a", "b").expect("rename");
        storage.sync_directory().expect("dir sync");
        storage.remove("b").expect("remove");
        let seen = seen.lock();
        assert_eq!(seen.len(), 10);
        assert_eq!(seen[0], (1, Phase::Before, vec![]));
        assert_eq!(seen[1], (1, Phase::After, vec!["a".to_owned()]));
        assert_eq!(seen[5], (3, Phase::After, vec!["b".to_owned()]));
    }
}
