//! [`DirtyTracker`]: harvesting KVM's dirty log through the backend chosen
//! for the kernel, merged with vm-memory's record of the VMM's own writes.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use kvmkit_core::{BoxError, DirtyLogArch, SlotId, Vcpu, VcpuId, Vm};
use kvmkit_memory::{Slot, SlotTable};
use vm_memory::bitmap::{AtomicBitmap, NewBitmap};
use vm_memory::{GuestRegionMmap, MmapRegion};

use crate::backend::{choose, Caps};
use crate::ring::Ring;
use crate::sys::{host_page_size, RingMap};
use crate::{
    Backend, DirtyBitmap, DirtyLog, Error, HarvestStats, HostWrites, Preference, Result,
    TrackerStats, PAGE_SIZE,
};

/// Pages per `KVM_CLEAR_DIRTY_LOG` a tracker issues unless told otherwise:
/// 2^18 pages (1 GiB of guest memory, 32 KiB of bitmap), the granularity
/// QEMU clears at by default. Only chunks with dirty pages are cleared.
///
/// ```
/// assert_eq!(kvmkit_dirty_log::DEFAULT_CLEAR_CHUNK_PAGES, 1 << 18);
/// ```
pub const DEFAULT_CLEAR_CHUNK_PAGES: usize = 1 << 18;

/// The largest clear chunk: `KVM_CLEAR_DIRTY_LOG` takes a `u32` page count.
const MAX_CLEAR_CHUNK_PAGES: usize = 1 << 31;

/// The hook a run loop calls when a vCPU's dirty ring is full (see
/// [`DirtyTracker::ring_full_hook`]); the same type as
/// `kvmkit_runloop::DirtyRingFullHook`.
///
/// ```
/// let hook: kvmkit_dirty_log::RingFullHook = std::sync::Arc::new(|_vcpu| Ok(()));
/// assert!(hook(kvmkit_core::VcpuId(0)).is_ok());
/// ```
pub type RingFullHook = Arc<dyn Fn(VcpuId) -> std::result::Result<(), BoxError> + Send + Sync>;

const RING_HINT: &str = " (the dirty ring must be enabled before any vCPU is created)";

/// A slot whose dirty pages the tracker harvests.
#[derive(Debug)]
struct Tracked {
    pages: usize,
    /// `KVM_GET_DIRTY_LOG`'s buffer, reused by every harvest (bitmap
    /// backends; empty for the ring).
    scratch: DirtyBitmap,
    /// The region whose vm-memory bitmap records the VMM's writes.
    host: Option<Arc<GuestRegionMmap<AtomicBitmap>>>,
}

#[derive(Debug, Default)]
struct State {
    slots: BTreeMap<SlotId, Tracked>,
    rings: Vec<Ring>,
    /// Entries were handed back but `KVM_RESET_DIRTY_RINGS` has not succeeded since.
    reset_pending: bool,
    totals: TrackerStats,
}

/// Harvests a VM's dirty pages with the best backend the kernel offers (or
/// the one asked for), into a [`DirtyLog`] that consumers [`take`] from.
///
/// - **Backends** ([`Backend`]): plain `KVM_GET_DIRTY_LOG`; manual protect
///   (`KVM_GET_DIRTY_LOG`, then `KVM_CLEAR_DIRTY_LOG` of exactly the pages
///   returned, in chunks, only where bits are set); the per-vCPU dirty ring.
///   [`DirtyTracker::new`] chooses from a [`Preference`] and enables the
///   capability, so create the tracker right after the VM: before any vCPU
///   exists (the ring) and before logging is on for any slot (manual protect
///   with `KVM_DIRTY_LOG_INITIALLY_SET`). One tracker per VM.
/// - **Slots**: [`enable_logging`] / [`disable_logging`] turn
///   `KVM_MEM_LOG_DIRTY_PAGES` on or off through the VM's
///   [`SlotTable`] and start or stop harvesting the slot, under the
///   tracker's lock so that no harvest sees one without the other; this works
///   while vCPUs run. [`track`] / [`track_slot`] / [`untrack`] are the
///   lower-level calls for VMMs that manage slots themselves.
/// - **The VMM's own writes**: a slot of a `SlotTable<A, AtomicBitmap>`
///   brings its vm-memory bitmap along; each harvest takes (and atomically
///   clears) it and merges it in, so pages devices and loaders wrote through
///   vm-memory appear too.
/// - **Epochs**: a harvest ORs what it found into the log; [`take`] returns
///   and clears a slot's pages. A page is reported by exactly one take after
///   the harvest that saw it, and again only once it is written again.
/// - **The ring**: [`attach_vcpu`] maps each vCPU's ring (before it runs);
///   install [`ring_full_hook`] in the run loop so that a full ring is
///   harvested before the vCPU enters again.
///
/// All methods take `&self`: share the tracker in an `Arc` between the
/// migration thread, the display and the vCPU threads (the ring hook).
///
/// [`take`]: DirtyTracker::take
/// [`enable_logging`]: DirtyTracker::enable_logging
/// [`disable_logging`]: DirtyTracker::disable_logging
/// [`track`]: DirtyTracker::track
/// [`track_slot`]: DirtyTracker::track_slot
/// [`untrack`]: DirtyTracker::untrack
/// [`attach_vcpu`]: DirtyTracker::attach_vcpu
/// [`ring_full_hook`]: DirtyTracker::ring_full_hook
///
/// ```
/// use std::sync::Arc;
/// use kvmkit_arch_x86_64::X86_64;
/// use kvmkit_dirty_log::{DirtyTracker, Preference};
/// use kvmkit_memory::{RegionConfig, SlotTable};
/// use vm_memory::bitmap::AtomicBitmap;
/// use vm_memory::{Bytes, GuestAddress};
/// # let Some(kvm) = kvmkit_test_support::kvm_or_skip!(X86_64) else { return };
/// let vm = Arc::new(kvm.create_vm(&Default::default()).unwrap());
/// let tracker = DirtyTracker::new(vm.clone(), Preference::GetLog).unwrap();
/// let mut table = SlotTable::<X86_64, AtomicBitmap>::with_page_size(8, 0x1000).unwrap();
/// table.register(vm).unwrap();
/// let ram = table.add(RegionConfig::anonymous(GuestAddress(0), 0x10_0000)).unwrap();
/// tracker.enable_logging(&mut table, ram).unwrap();
/// // A device writes guest memory through vm-memory.
/// table.guest_memory().write_obj(1u32, GuestAddress(0x5000)).unwrap();
/// tracker.harvest().unwrap();
/// let dirty = tracker.take(ram).unwrap();
/// assert_eq!(dirty.pages_iter().collect::<Vec<_>>(), vec![5]);
/// ```
pub struct DirtyTracker<A: DirtyLogArch> {
    vm: Arc<Vm<A>>,
    backend: Backend,
    clear_chunk_pages: usize,
    log: DirtyLog,
    state: Mutex<State>,
}

impl<A: DirtyLogArch> fmt::Debug for DirtyTracker<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DirtyTracker")
            .field("backend", &self.backend)
            .field("clear_chunk_pages", &self.clear_chunk_pages)
            .field("state", &*self.lock())
            .finish_non_exhaustive()
    }
}

impl<A: DirtyLogArch> DirtyTracker<A> {
    /// Chooses the backend for `preference` from the VM's capabilities and
    /// enables it (`KVM_ENABLE_CAP`): the ring before any vCPU is created,
    /// manual protect before logging is on for any slot.
    ///
    /// A forced backend the kernel lacks is an [`Error::Unsupported`] naming
    /// the capability; [`Preference::Auto`] falls back instead, and
    /// [`DirtyTracker::backend`] says what it chose. The ring counts as
    /// absent on an arch without `KVM_DIRTY_LOG_PAGE_OFFSET`
    /// ([`DirtyLogArch::DIRTY_RING_PAGE_OFFSET`] is `None`). Hosts whose page
    /// size is not 4 KiB are refused ([`Error::HostPageSize`]): KVM's dirty
    /// bits are host pages, this crate's bitmaps 4 KiB pages.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use kvmkit_arch_x86_64::X86_64;
    /// use kvmkit_core::VcpuId;
    /// use kvmkit_dirty_log::{DirtyTracker, Preference};
    /// # let Some(kvm) = kvmkit_test_support::kvm_or_skip!(X86_64) else { return };
    /// let vm = Arc::new(kvm.create_vm(&Default::default()).unwrap());
    /// let tracker = DirtyTracker::new(vm.clone(), Preference::auto()).unwrap();
    /// println!("dirty log backend: {}", tracker.backend());
    /// // The ring cannot be enabled once a vCPU exists.
    /// let other = Arc::new(kvm.create_vm(&Default::default()).unwrap());
    /// let _vcpu = other.create_vcpu(VcpuId(0), &Default::default()).unwrap();
    /// if tracker.backend().is_ring() {
    ///     let e = DirtyTracker::new(other, Preference::auto()).unwrap_err();
    ///     assert!(e.to_string().contains("before any vCPU is created"));
    /// }
    /// ```
    pub fn new(vm: Arc<Vm<A>>, preference: Preference) -> Result<Self> {
        // KVM's dirty bits are host pages; this crate's bitmaps are 4 KiB pages.
        match host_page_size() {
            Ok(PAGE_SIZE) => {}
            Ok(page_size) => return Err(Error::HostPageSize { page_size }),
            Err(source) => return Err(Error::HostPageSizeUnknown { source }),
        }
        let plan = choose(preference, Caps::probe(&vm))?;
        if let Some((cap, arg)) = plan.enable {
            vm.enable_cap(cap, [arg, 0, 0, 0])
                .map_err(|source| Error::EnableCap {
                    cap: cap.name(),
                    arg,
                    hint: if plan.backend.is_ring() {
                        RING_HINT
                    } else {
                        ""
                    },
                    source,
                })?;
        }
        Ok(DirtyTracker {
            vm,
            backend: plan.backend,
            clear_chunk_pages: DEFAULT_CLEAR_CHUNK_PAGES,
            log: DirtyLog::new(),
            state: Mutex::default(),
        })
    }

    /// Sets how many pages one `KVM_CLEAR_DIRTY_LOG` covers (manual protect):
    /// a non-zero multiple of 64 up to 2^31. Smaller chunks hold KVM's MMU
    /// lock for less time per call but cost more calls.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use kvmkit_arch_x86_64::X86_64;
    /// use kvmkit_dirty_log::{DirtyTracker, Error, Preference, DEFAULT_CLEAR_CHUNK_PAGES};
    /// # let Some(kvm) = kvmkit_test_support::kvm_or_skip!(X86_64) else { return };
    /// let vm = Arc::new(kvm.create_vm(&Default::default()).unwrap());
    /// let t = DirtyTracker::new(vm, Preference::GetLog).unwrap();
    /// assert_eq!(t.clear_chunk_pages(), DEFAULT_CLEAR_CHUNK_PAGES);
    /// let t = t.with_clear_chunk_pages(4096).unwrap();
    /// assert_eq!(t.clear_chunk_pages(), 4096);
    /// let e = t.with_clear_chunk_pages(100).unwrap_err();
    /// assert!(matches!(e, Error::ClearChunk { pages: 100 }));
    /// ```
    pub fn with_clear_chunk_pages(mut self, pages: usize) -> Result<Self> {
        if pages == 0 || pages % 64 != 0 || pages > MAX_CLEAR_CHUNK_PAGES {
            return Err(Error::ClearChunk { pages });
        }
        self.clear_chunk_pages = pages;
        Ok(self)
    }

    /// Pages per `KVM_CLEAR_DIRTY_LOG` (see
    /// [`DirtyTracker::with_clear_chunk_pages`]).
    pub fn clear_chunk_pages(&self) -> usize {
        self.clear_chunk_pages
    }

    /// The backend in use.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use kvmkit_arch_x86_64::X86_64;
    /// use kvmkit_dirty_log::{Backend, DirtyTracker, Preference};
    /// # let Some(kvm) = kvmkit_test_support::kvm_or_skip!(X86_64) else { return };
    /// let vm = Arc::new(kvm.create_vm(&Default::default()).unwrap());
    /// let t = DirtyTracker::new(vm.clone(), Preference::GetLog).unwrap();
    /// assert_eq!(t.backend(), Backend::GetLog);
    /// assert!(Arc::ptr_eq(t.vm(), &vm));
    /// ```
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The VM (see [`DirtyTracker::backend`] for an example).
    pub fn vm(&self) -> &Arc<Vm<A>> {
        &self.vm
    }

    /// The log harvests go into (for [`DirtyLog::epoch`],
    /// [`DirtyLog::pending_count`] and the like).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use kvmkit_arch_x86_64::X86_64;
    /// use kvmkit_dirty_log::{DirtyTracker, Preference};
    /// use kvmkit_memory::{RegionConfig, SlotTable};
    /// use vm_memory::GuestAddress;
    /// # let Some(kvm) = kvmkit_test_support::kvm_or_skip!(X86_64) else { return };
    /// let vm = Arc::new(kvm.create_vm(&Default::default()).unwrap());
    /// let t = DirtyTracker::new(vm, Preference::GetLog).unwrap();
    /// assert!(t.log().slots().is_empty());
    /// ```
    pub fn log(&self) -> &DirtyLog {
        &self.log
    }

    /// Returns and clears the pages of `slot` harvested since the previous
    /// take (see [`DirtyLog::take`]); `None` if the slot is not tracked and
    /// was never harvested. See the type's example.
    pub fn take(&self, slot: SlotId) -> Option<DirtyBitmap> {
        self.log.take(slot)
    }

    /// The tracked slots, in ascending order (see [`DirtyTracker::track`]
    /// for an example).
    pub fn tracked(&self) -> Vec<SlotId> {
        self.lock().slots.keys().copied().collect()
    }

    /// Totals since the tracker was created.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use kvmkit_arch_x86_64::X86_64;
    /// use kvmkit_dirty_log::{DirtyTracker, Preference};
    /// use kvmkit_memory::{RegionConfig, SlotTable};
    /// use vm_memory::GuestAddress;
    /// # let Some(kvm) = kvmkit_test_support::kvm_or_skip!(X86_64) else { return };
    /// let vm = Arc::new(kvm.create_vm(&Default::default()).unwrap());
    /// let t = DirtyTracker::new(vm, Preference::GetLog).unwrap();
    /// assert_eq!(t.stats().harvests, 0);
    /// t.harvest().unwrap();
    /// assert_eq!(t.stats().harvests, 1);
    /// ```
    pub fn stats(&self) -> TrackerStats {
        self.lock().totals.clone()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Harvests update the state only through whole-value assignments and
        // map inserts/removes, so a panic elsewhere leaves it consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Maps `vcpu`'s dirty ring (ring backend; a no-op returning `false` for
    /// the others, so a VMM may call it unconditionally). Call it before the
    /// vCPU runs: a ring nobody reads fills up and stops its vCPU. The
    /// mapping holds its own reference to the vCPU's file, so the vCPU may
    /// move to its thread afterwards; it is unmapped when the tracker drops.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use kvmkit_arch_x86_64::X86_64;
    /// use kvmkit_core::VcpuId;
    /// use kvmkit_dirty_log::{DirtyTracker, Preference};
    /// # let Some(kvm) = kvmkit_test_support::kvm_or_skip!(X86_64) else { return };
    /// let vm = Arc::new(kvm.create_vm(&Default::default()).unwrap());
    /// let t = DirtyTracker::new(vm.clone(), Preference::auto()).unwrap();
    /// let vcpu = vm.create_vcpu(VcpuId(0), &Default::default()).unwrap();
    /// assert_eq!(t.attach_vcpu(&vcpu).unwrap(), t.backend().is_ring());
    /// ```
    pub fn attach_vcpu(&self, vcpu: &Vcpu<A>) -> Result<bool> {
        let Some(bytes) = self.backend.ring_bytes() else {
            return Ok(false);
        };
        let id = vcpu.id();
        let mut st = self.lock();
        if st.rings.iter().any(|r| r.vcpu() == id) {
            return Err(Error::RingAttached { vcpu: id });
        }
        let offset = A::DIRTY_RING_PAGE_OFFSET
            .expect("the ring is only chosen where the arch has a ring offset");
        let map = RingMap::map(vcpu.raw_fd(), bytes, offset).map_err(|source| Error::MapRing {
            vcpu: id,
            bytes,
            source,
        })?;
        st.rings.push(Ring::new(id, map));
        Ok(true)
    }

    /// Starts harvesting slot `slot` of `len` bytes, whose logging
    /// (`KVM_MEM_LOG_DIRTY_PAGES`) the caller turned on (bitmap backends:
    /// before this call, or the next harvest fails naming the slot).
    /// Without a vm-memory bitmap: see [`DirtyTracker::track_slot`].
    ///
    /// ```
    /// use std::sync::Arc;
    /// use kvmkit_arch_x86_64::X86_64;
    /// use kvmkit_core::SlotId;
    /// use kvmkit_dirty_log::{DirtyTracker, Preference};
    /// use kvmkit_memory::{RegionConfig, SlotTable};
    /// use vm_memory::GuestAddress;
    /// # let Some(kvm) = kvmkit_test_support::kvm_or_skip!(X86_64) else { return };
    /// let vm = Arc::new(kvm.create_vm(&Default::default()).unwrap());
    /// let t = DirtyTracker::new(vm.clone(), Preference::GetLog).unwrap();
    /// let mut table = SlotTable::for_vm(vm).unwrap();
    /// let config = RegionConfig::anonymous(GuestAddress(0), 0x4000).dirty_logging(true);
    /// let id = table.add(config).unwrap();
    /// t.track(id, 0x4000).unwrap();
    /// assert_eq!(t.tracked(), vec![id]);
    /// t.harvest().unwrap();
    /// assert!(t.untrack(id).unwrap().is_clean());
    /// assert!(t.tracked().is_empty());
    /// ```
    pub fn track(&self, slot: SlotId, len: u64) -> Result<()> {
        let mut st = self.lock();
        self.insert(&mut st, slot, len, None)
    }

    /// Like [`DirtyTracker::track`] for a slot of a `kvmkit_memory` table,
    /// bringing its vm-memory bitmap (if `B` records writes) so that the
    /// VMM's own writes are merged into every harvest.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use kvmkit_arch_x86_64::X86_64;
    /// use kvmkit_dirty_log::{DirtyTracker, Preference};
    /// use kvmkit_memory::{RegionConfig, SlotTable};
    /// use vm_memory::bitmap::AtomicBitmap;
    /// use vm_memory::{Bytes, GuestAddress};
    /// # let Some(kvm) = kvmkit_test_support::kvm_or_skip!(X86_64) else { return };
    /// let vm = Arc::new(kvm.create_vm(&Default::default()).unwrap());
    /// let t = DirtyTracker::new(vm.clone(), Preference::GetLog).unwrap();
    /// let mut table = SlotTable::<X86_64, AtomicBitmap>::with_page_size(8, 0x1000).unwrap();
    /// table.register(vm).unwrap();
    /// let config = RegionConfig::anonymous(GuestAddress(0), 0x4000).dirty_logging(true);
    /// let id = table.add(config).unwrap();
    /// t.track_slot(table.slot(id).unwrap()).unwrap();
    /// table.guest_memory().write_obj(1u8, GuestAddress(0x3000)).unwrap();
    /// t.harvest().unwrap();
    /// assert_eq!(t.take(id).unwrap().pages_iter().collect::<Vec<_>>(), vec![3]);
    /// ```
    pub fn track_slot<B: HostWrites>(&self, slot: &Slot<B>) -> Result<()> {
        let mut st = self.lock();
        self.insert(
            &mut st,
            slot.id(),
            slot.len(),
            B::host_writes(slot.region()),
        )
    }

    /// Stops harvesting `slot` and returns what was harvested and not yet
    /// taken. It does not harvest first: call [`DirtyTracker::harvest`]
    /// before, or use [`DirtyTracker::disable_logging`], to get the last
    /// pages. Ring entries for the slot found later are ignored. See
    /// [`DirtyTracker::track`] for an example.
    pub fn untrack(&self, slot: SlotId) -> Result<DirtyBitmap> {
        let mut st = self.lock();
        let t = st
            .slots
            .remove(&slot)
            .ok_or(Error::SlotNotTracked { slot })?;
        Ok(self
            .log
            .remove(slot)
            .unwrap_or_else(|| DirtyBitmap::new(t.pages)))
    }

    /// Turns dirty logging of slot `id` of `table` on and starts harvesting
    /// it, atomically with respect to harvests; works while vCPUs run.
    ///
    /// `table` must be registered with the tracker's VM. With manual protect
    /// and `KVM_DIRTY_LOG_INITIALLY_SET` this costs almost nothing and the
    /// first harvest reports every page of the slot; the other backends
    /// write-protect the slot now and report only pages written from now on.
    /// The slot's vm-memory bitmap is cleared: the VMM's earlier writes do
    /// not count either.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use kvmkit_arch_x86_64::X86_64;
    /// use kvmkit_dirty_log::{DirtyTracker, Preference};
    /// use kvmkit_memory::{RegionConfig, SlotTable};
    /// use vm_memory::GuestAddress;
    /// # let Some(kvm) = kvmkit_test_support::kvm_or_skip!(X86_64) else { return };
    /// let vm = Arc::new(kvm.create_vm(&Default::default()).unwrap());
    /// let t = DirtyTracker::new(vm.clone(), Preference::auto()).unwrap();
    /// let mut table = SlotTable::for_vm(vm).unwrap();
    /// let id = table.add(RegionConfig::anonymous(GuestAddress(0), 0x10_0000)).unwrap();
    /// t.enable_logging(&mut table, id).unwrap();
    /// assert!(table.slot(id).unwrap().logs_dirty_pages());
    /// t.harvest().unwrap();
    /// let last = t.disable_logging(&mut table, id).unwrap();
    /// assert_eq!(last.pages(), 256);
    /// assert!(!table.slot(id).unwrap().logs_dirty_pages());
    /// ```
    pub fn enable_logging<B: NewBitmap + HostWrites + 'static>(
        &self,
        table: &mut SlotTable<A, B>,
        id: SlotId,
    ) -> Result<()> {
        let (len, host) = {
            let slot = self.table_slot(table, id)?;
            (slot.len(), B::host_writes(slot.region()))
        };
        let mut st = self.lock();
        if st.slots.contains_key(&id) {
            return Err(Error::SlotTracked { slot: id });
        }
        slot_pages(id, len)?;
        table
            .set_dirty_logging(id, true)
            .map_err(|source| Error::SetDirtyLogging {
                slot: id,
                on: true,
                source,
            })?;
        self.insert(&mut st, id, len, host)
    }

    /// Harvests slot `id` one last time, turns its dirty logging off and
    /// stops harvesting it; returns every page harvested and not yet taken.
    /// Works while vCPUs run; pages written while this runs may or may not
    /// be in the result (logging is being stopped). See
    /// [`DirtyTracker::enable_logging`] for an example.
    pub fn disable_logging<B: NewBitmap + HostWrites + 'static>(
        &self,
        table: &mut SlotTable<A, B>,
        id: SlotId,
    ) -> Result<DirtyBitmap> {
        self.table_slot(table, id)?;
        let t0 = Instant::now();
        let mut st = self.lock();
        let mut stats = HarvestStats::default();
        let mut per_slot = BTreeMap::new();
        let result = self.final_harvest(&mut st, table, id, &mut stats, &mut per_slot);
        stats.duration = t0.elapsed();
        st.totals.add(&stats);
        result?;
        let t = st
            .slots
            .remove(&id)
            .expect("final_harvest checked the slot is tracked");
        Ok(self
            .log
            .remove(id)
            .unwrap_or_else(|| DirtyBitmap::new(t.pages)))
    }

    fn final_harvest<B: NewBitmap + HostWrites + 'static>(
        &self,
        st: &mut State,
        table: &mut SlotTable<A, B>,
        id: SlotId,
        stats: &mut HarvestStats,
        per_slot: &mut BTreeMap<SlotId, u64>,
    ) -> Result<()> {
        let off = |source| Error::SetDirtyLogging {
            slot: id,
            on: false,
            source,
        };
        if self.backend.is_ring() {
            if !st.slots.contains_key(&id) {
                return Err(Error::SlotNotTracked { slot: id });
            }
            // Off first: once the memslot update returns, every entry for
            // the slot is in a ring, and the harvest below still counts it.
            table.set_dirty_logging(id, false).map_err(off)?;
            self.collect_rings(st, stats, per_slot, None)?;
            let t = st.slots.get(&id).expect("checked above");
            self.harvest_host(id, t, stats, per_slot)
        } else {
            let t = st
                .slots
                .get_mut(&id)
                .ok_or(Error::SlotNotTracked { slot: id })?;
            // KVM_GET_DIRTY_LOG needs logging on: harvest, then turn it off.
            self.harvest_bitmap(id, t, stats, per_slot)?;
            table.set_dirty_logging(id, false).map_err(off)
        }
    }

    fn table_slot<'t, B: NewBitmap + 'static>(
        &self,
        table: &'t SlotTable<A, B>,
        id: SlotId,
    ) -> Result<&'t Slot<B>> {
        if !table.vm().is_some_and(|vm| Arc::ptr_eq(vm, &self.vm)) {
            return Err(Error::ForeignTable { slot: id });
        }
        table.slot(id).ok_or(Error::UnknownSlot { slot: id })
    }

    fn insert(
        &self,
        st: &mut State,
        slot: SlotId,
        len: u64,
        host: Option<Arc<GuestRegionMmap<AtomicBitmap>>>,
    ) -> Result<()> {
        let pages = slot_pages(slot, len)?;
        if st.slots.contains_key(&slot) {
            return Err(Error::SlotTracked { slot });
        }
        if let Some(region) = &host {
            // Logging starts clean, as KVM's does.
            host_bitmap(region).reset();
        }
        // The slot is in the log from now on: `take` returns an empty
        // bitmap rather than `None` before the first harvest.
        self.log.accumulate_pages(slot, pages, [])?;
        let scratch = if self.backend.is_ring() {
            DirtyBitmap::new(0)
        } else {
            DirtyBitmap::new(pages)
        };
        st.slots.insert(
            slot,
            Tracked {
                pages,
                scratch,
                host,
            },
        );
        Ok(())
    }

    /// Harvests every tracked slot into the log: KVM's dirty pages through
    /// the backend (plus `KVM_RESET_DIRTY_RINGS` for the ring) and the
    /// VMM's writes from vm-memory's bitmaps. Pages the harvest saw are in
    /// the log even when it fails part way (a failing `KVM_CLEAR_DIRTY_LOG`
    /// or ring reset is retried by the next harvest).
    ///
    /// Copy a page's contents only after the harvest that reported it
    /// returned: that is when KVM write-protects it again. See the type's
    /// example.
    pub fn harvest(&self) -> Result<HarvestStats> {
        let t0 = Instant::now();
        let mut st = self.lock();
        let mut stats = HarvestStats::default();
        let mut per_slot: BTreeMap<SlotId, u64> = st.slots.keys().map(|s| (*s, 0)).collect();
        let result = self.harvest_all(&mut st, &mut stats, &mut per_slot);
        stats.per_slot = per_slot.into_iter().collect();
        stats.duration = t0.elapsed();
        st.totals.add(&stats);
        result.map(|()| stats)
    }

    /// Harvests only the dirty rings (no vm-memory bitmaps): what
    /// [`DirtyTracker::ring_full_hook`] does. Ring backend only; a no-op for
    /// the others.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use kvmkit_arch_x86_64::X86_64;
    /// use kvmkit_dirty_log::{DirtyTracker, Preference};
    /// use kvmkit_memory::{RegionConfig, SlotTable};
    /// use vm_memory::GuestAddress;
    /// # let Some(kvm) = kvmkit_test_support::kvm_or_skip!(X86_64) else { return };
    /// let vm = Arc::new(kvm.create_vm(&Default::default()).unwrap());
    /// let t = DirtyTracker::new(vm, Preference::GetLog).unwrap();
    /// assert_eq!(t.harvest_rings().unwrap().ioctls, 0);
    /// ```
    pub fn harvest_rings(&self) -> Result<HarvestStats> {
        let t0 = Instant::now();
        let mut st = self.lock();
        let mut stats = HarvestStats::default();
        let mut per_slot = BTreeMap::new();
        let result = self.collect_rings(&mut st, &mut stats, &mut per_slot, None);
        stats.per_slot = per_slot.into_iter().collect();
        stats.duration = t0.elapsed();
        st.totals.add(&stats);
        result.map(|()| stats)
    }

    /// Empties the rings because `vcpu`'s is full
    /// (`KVM_EXIT_DIRTY_RING_FULL`); call it while `vcpu` is out of
    /// `KVM_RUN` (the run loop's hook runs on the vCPU's own thread).
    ///
    /// Fails if `vcpu`'s ring was never attached (then nothing could ever
    /// empty it) or if it stays full with nothing in it
    /// ([`Error::RingStuck`]). A ring KVM overfilled (a kernel that does not
    /// stop the vCPU at the soft limit) is recovered: the gap it leaves is
    /// skipped and every tracked page is reported dirty, since the lost
    /// entries are unknown ([`HarvestStats::ring_overflows`]).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use kvmkit_arch_x86_64::X86_64;
    /// use kvmkit_core::VcpuId;
    /// use kvmkit_dirty_log::{DirtyTracker, Error, Preference};
    /// # let Some(kvm) = kvmkit_test_support::kvm_or_skip!(X86_64) else { return };
    /// let vm = Arc::new(kvm.create_vm(&Default::default()).unwrap());
    /// let t = DirtyTracker::new(vm, Preference::GetLog).unwrap();
    /// // No ring was attached for vCPU 3: nothing could empty it.
    /// let e = t.on_ring_full(VcpuId(3)).unwrap_err();
    /// assert!(matches!(e, Error::RingNotAttached { vcpu: VcpuId(3) }));
    /// ```
    pub fn on_ring_full(&self, vcpu: VcpuId) -> Result<HarvestStats> {
        let t0 = Instant::now();
        let mut st = self.lock();
        if !st.rings.iter().any(|r| r.vcpu() == vcpu) {
            return Err(Error::RingNotAttached { vcpu });
        }
        let mut stats = HarvestStats::default();
        let mut per_slot = BTreeMap::new();
        let result = self.collect_rings(&mut st, &mut stats, &mut per_slot, Some(vcpu));
        stats.per_slot = per_slot.into_iter().collect();
        stats.duration = t0.elapsed();
        st.totals.add(&stats);
        st.totals.ring_full += 1;
        result.map(|()| stats)
    }

    /// The hook to install in the run loop
    /// (`kvmkit_runloop::Buses::with_dirty_ring_full`): it calls
    /// [`DirtyTracker::on_ring_full`] on the vCPU's thread, which returns
    /// once the rings are harvested and reset, so the vCPU can enter again.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use kvmkit_arch_x86_64::X86_64;
    /// use kvmkit_core::VcpuId;
    /// use kvmkit_dirty_log::{DirtyTracker, Preference};
    /// use kvmkit_runloop::Buses;
    /// # let Some(kvm) = kvmkit_test_support::kvm_or_skip!(X86_64) else { return };
    /// let vm = Arc::new(kvm.create_vm(&Default::default()).unwrap());
    /// let t = Arc::new(DirtyTracker::new(vm, Preference::auto()).unwrap());
    /// let buses = Buses::<X86_64>::default().with_dirty_ring_full(t.ring_full_hook());
    /// // vCPU 0 has no ring attached: the hook's error ends such a vCPU.
    /// assert!(buses.dirty_ring_full(VcpuId(0)).is_err());
    /// ```
    pub fn ring_full_hook(self: &Arc<Self>) -> RingFullHook {
        let tracker = Arc::clone(self);
        Arc::new(move |vcpu| {
            tracker
                .on_ring_full(vcpu)
                .map(drop)
                .map_err(|e| Box::new(e) as BoxError)
        })
    }

    fn harvest_all(
        &self,
        st: &mut State,
        stats: &mut HarvestStats,
        per_slot: &mut BTreeMap<SlotId, u64>,
    ) -> Result<()> {
        if self.backend.is_ring() {
            self.collect_rings(st, stats, per_slot, None)?;
            for (id, t) in &st.slots {
                self.harvest_host(*id, t, stats, per_slot)?;
            }
            return Ok(());
        }
        for (id, t) in &mut st.slots {
            self.harvest_bitmap(*id, t, stats, per_slot)?;
        }
        Ok(())
    }

    /// One slot with `KVM_GET_DIRTY_LOG` (and `KVM_CLEAR_DIRTY_LOG`), plus
    /// its vm-memory bitmap.
    fn harvest_bitmap(
        &self,
        id: SlotId,
        t: &mut Tracked,
        stats: &mut HarvestStats,
        per_slot: &mut BTreeMap<SlotId, u64>,
    ) -> Result<()> {
        stats.ioctls += 1;
        self.vm
            .get_dirty_log(id, t.scratch.words_mut())
            .map_err(|source| Error::GetDirtyLog { slot: id, source })?;
        t.scratch.mask_tail();
        let kvm = count(&t.scratch);
        stats.kvm_pages += kvm;
        // Into the log before clearing: a failed clear then reports the
        // pages again, it never loses them.
        self.log.accumulate(id, &t.scratch)?;
        let host = harvest_host_bitmap(t)?;
        let pages = match &host {
            Some(h) => {
                stats.host_pages += count(h);
                self.log.accumulate(id, h)?;
                union_count(&t.scratch, h)
            }
            None => kvm,
        };
        *per_slot.entry(id).or_default() += pages;
        if matches!(self.backend, Backend::ManualProtect { .. }) && kvm > 0 {
            self.clear(id, t, stats)?;
        }
        Ok(())
    }

    /// `KVM_CLEAR_DIRTY_LOG` of exactly the pages in `t.scratch`, one call
    /// per chunk that has any.
    fn clear(&self, id: SlotId, t: &Tracked, stats: &mut HarvestStats) -> Result<()> {
        let chunk = self.clear_chunk_pages;
        for (i, words) in t.scratch.words().chunks(chunk / 64).enumerate() {
            if words.iter().all(|w| *w == 0) {
                continue;
            }
            let first = i * chunk;
            // At most `chunk` <= 2^31 pages; shorter at the slot's end.
            let num_pages = u32::try_from((t.pages - first).min(chunk))
                .expect("clear chunks are at most 2^31 pages");
            let first_page = first as u64;
            stats.ioctls += 1;
            self.vm
                .clear_dirty_log(id, first_page, num_pages, words)
                .map_err(|source| Error::ClearDirtyLog {
                    slot: id,
                    first_page,
                    num_pages,
                    source,
                })?;
        }
        Ok(())
    }

    /// The vm-memory bitmap of one slot, for the ring backend.
    fn harvest_host(
        &self,
        id: SlotId,
        t: &Tracked,
        stats: &mut HarvestStats,
        per_slot: &mut BTreeMap<SlotId, u64>,
    ) -> Result<()> {
        if let Some(h) = harvest_host_bitmap(t)? {
            let n = count(&h);
            stats.host_pages += n;
            *per_slot.entry(id).or_default() += n;
            self.log.accumulate(id, &h)?;
        }
        Ok(())
    }

    /// Collects every attached ring into the log, then resets the rings.
    ///
    /// `full` is the vCPU whose ring is full, when called for a
    /// `KVM_EXIT_DIRTY_RING_FULL`: if its ring yields nothing, the ring is
    /// searched for a gap left by an overfilled ring.
    fn collect_rings(
        &self,
        st: &mut State,
        stats: &mut HarvestStats,
        per_slot: &mut BTreeMap<SlotId, u64>,
        full: Option<VcpuId>,
    ) -> Result<()> {
        let State {
            slots,
            rings,
            reset_pending,
            ..
        } = st;
        let mut found: BTreeMap<SlotId, Vec<usize>> = BTreeMap::new();
        let mut handed_back = 0u32;
        let mut overflowed = false;
        let mut stuck = None;
        for ring in rings.iter_mut() {
            let mut sink = |e: crate::ring::RingEntry| {
                let slot = SlotId(e.slot);
                let page = usize::try_from(e.offset).ok().filter(|_| e.as_id == 0);
                match (page, slots.get(&slot)) {
                    (Some(p), Some(t)) if p < t.pages => found.entry(slot).or_default().push(p),
                    _ => stats.ignored_entries += 1,
                }
            };
            let mut n = ring.collect(&mut sink);
            // A completely full ring: KVM went past its reserved entries
            // and may have overwritten some before they were read.
            overflowed |= n == ring.entries();
            if full == Some(ring.vcpu()) && n == 0 {
                let gap = ring.skip_gap();
                if gap > 0 {
                    // Entries were lost where the gap is.
                    overflowed = true;
                    n = gap + ring.collect(&mut sink);
                }
                if n == 0 {
                    // Another harvest may have emptied the ring since the
                    // exit; twice in a row with nothing collected by anyone
                    // in between, the ring is stuck.
                    ring.empty_full += 1;
                    if ring.empty_full >= 2 {
                        stuck = Some(ring.vcpu());
                    }
                }
            }
            if n > 0 {
                ring.empty_full = 0;
            }
            handed_back += n;
        }
        // Into the log before the reset: if the reset fails, the pages are
        // still reported (and the next harvest resets the entries).
        for (slot, pages) in found {
            let n = pages.len() as u64;
            stats.kvm_pages += n;
            *per_slot.entry(slot).or_default() += n;
            let t = slots
                .get(&slot)
                .expect("entries were kept only for tracked slots");
            self.log.accumulate_pages(slot, t.pages, pages)?;
        }
        if overflowed {
            // Which pages the lost entries named is unknown: report them all.
            stats.ring_overflows += 1;
            for (slot, t) in slots.iter() {
                let all = DirtyBitmap::from_vec(vec![u64::MAX; t.pages.div_ceil(64)], t.pages)?;
                self.log.accumulate(*slot, &all)?;
                *per_slot.entry(*slot).or_default() = t.pages as u64;
            }
        }
        if handed_back > 0 || *reset_pending {
            *reset_pending = true;
            stats.ioctls += 1;
            self.vm
                .reset_dirty_rings()
                .map_err(|source| Error::ResetDirtyRings { source })?;
            *reset_pending = false;
        }
        match stuck {
            Some(vcpu) => Err(Error::RingStuck { vcpu }),
            None => Ok(()),
        }
    }
}

/// The page count of a slot of `len` bytes: a non-zero multiple of 4 KiB.
fn slot_pages(slot: SlotId, len: u64) -> Result<usize> {
    if len == 0 || len % PAGE_SIZE != 0 {
        return Err(Error::SlotSize { slot, len });
    }
    usize::try_from(len / PAGE_SIZE).map_err(|_| Error::SlotSize { slot, len })
}

fn host_bitmap(region: &GuestRegionMmap<AtomicBitmap>) -> &AtomicBitmap {
    let mapping: &MmapRegion<AtomicBitmap> = region;
    mapping.bitmap()
}

fn harvest_host_bitmap(t: &Tracked) -> Result<Option<DirtyBitmap>> {
    t.host
        .as_ref()
        .map(|region| DirtyBitmap::harvest_atomic_bitmap(host_bitmap(region)))
        .transpose()
}

fn count(bm: &DirtyBitmap) -> u64 {
    bm.count() as u64
}

fn union_count(a: &DirtyBitmap, b: &DirtyBitmap) -> u64 {
    a.words()
        .iter()
        .zip(b.words())
        .map(|(x, y)| u64::from((x | y).count_ones()))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_sizes() {
        assert_eq!(slot_pages(SlotId(1), 0x3000).unwrap(), 3);
        for bad in [0, 0x1001, 0xfff] {
            let e = slot_pages(SlotId(1), bad).unwrap_err();
            assert!(matches!(e, Error::SlotSize { len, .. } if len == bad));
        }
        assert_eq!(
            slot_pages(SlotId(2), 0x800).unwrap_err().to_string(),
            "tracking slot 2 of 0x800 bytes: the size must be a non-zero multiple of 4 KiB"
        );
    }

    #[test]
    fn union_counts_each_page_once() {
        let a = DirtyBitmap::from_words(&[0b0110, 1], 65).unwrap();
        let b = DirtyBitmap::from_words(&[0b1100, 0], 65).unwrap();
        assert_eq!(union_count(&a, &b), 4);
        assert_eq!(count(&a), 3);
    }
}
