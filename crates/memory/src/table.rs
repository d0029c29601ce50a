//! The slot table: guest RAM regions, their slot ids, and their registration with KVM.

use crate::mapping::{copy_contents, map};
use crate::rules::{check_readonly_cap, check_region, lowest_free_id, vm_max_slots};
use crate::{kvm, Backing, Error, GuestMemoryHandle, RegionConfig, Result, Slot};
use kvmkit_core::{Arch, MemoryFlags, SlotId, Vm};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, PoisonError};
use vm_memory::bitmap::NewBitmap;
use vm_memory::{GuestAddress, GuestAddressSpace, GuestMemoryAtomic, GuestMemoryMmap};

/// The page size a table checks alignment against unless told otherwise: 4 KiB.
///
/// ```
/// # use kvmkit_memory::{SlotTable, PAGE_SIZE};
/// # use kvmkit_arch_x86_64::X86_64;
/// assert_eq!(SlotTable::<X86_64>::new(1).page_size(), PAGE_SIZE);
/// ```
pub const PAGE_SIZE: u64 = 0x1000;

/// The slot limit [`SlotTable::for_vm`] assumes when the kernel does not
/// report `KVM_CAP_NR_MEMSLOTS` (the historical `KVM_MEMORY_SLOTS`).
///
/// ```
/// assert_eq!(kvmkit_memory::FALLBACK_MAX_SLOTS, 32);
/// ```
pub const FALLBACK_MAX_SLOTS: u32 = 32;

/// The memory-slot table of one VM: guest RAM regions, each a KVM memory
/// slot with an id, a guest physical range, flags and a host mapping.
///
/// - **Regions** may be anywhere and discontiguous (see [`crate::pc_layout`]);
///   they must be non-empty, page-aligned and must not overlap or run past
///   the end of the address space.
/// - **Slot ids** are allocated lowest-free-first and reused after removal,
///   below [`SlotTable::max_slots`].
/// - **Registration**: once [`SlotTable::register`]ed with a VM, every
///   change is made in KVM first and in the table only when KVM accepted it.
///   The table holds the VM (`Arc<Vm<A>>`) and, when dropped, deletes its
///   slots from KVM before unmapping their memory.
/// - **Access**: [`SlotTable::memory`] hands out a [`GuestMemoryHandle`], the
///   vm-memory view devices use; every change publishes a new map to it.
///
/// `B` is vm-memory's dirty bitmap for host-side writes: `()` (none) by
/// default, `vm_memory::bitmap::AtomicBitmap` to track device writes.
///
/// Changing a slot under running vCPUs is allowed by KVM but racy for the
/// guest (a vCPU touching a slot being removed or resized takes MMIO exits);
/// pause the vCPUs around such changes.
///
/// ```
/// use kvmkit_memory::{pc_layout, SlotTable};
/// use kvmkit_arch_x86_64::X86_64;
/// use kvmkit_core::{MemoryFlags, SlotId};
/// use vm_memory::GuestAddress;
/// let mut table = SlotTable::<X86_64>::new(32);
/// let ids = table.add_ram(&pc_layout(2 << 20).unwrap(), MemoryFlags::NONE).unwrap();
/// assert_eq!(ids, [SlotId(0), SlotId(1)]);
/// assert_eq!(table.total_bytes(), 2 << 20);
/// assert!(table.slot_containing(GuestAddress(0xb_8000)).is_none()); // the legacy hole
/// assert_eq!(table.slot_containing(GuestAddress(0x10_0000)).unwrap().id(), SlotId(1));
/// ```
pub struct SlotTable<A: Arch, B: NewBitmap + 'static = ()> {
    max_slots: u32,
    page_size: u64,
    /// The slots, keyed by guest physical address (they do not overlap).
    by_gpa: BTreeMap<u64, Slot<B>>,
    /// Slot id to the key in `by_gpa`.
    ids: BTreeMap<SlotId, u64>,
    memory: GuestMemoryAtomic<GuestMemoryMmap<B>>,
    vm: Option<Arc<Vm<A>>>,
}

impl<A: Arch> SlotTable<A> {
    /// An empty, unregistered table without a host-write bitmap that allows
    /// slot ids below `max_slots` and checks alignment against [`PAGE_SIZE`].
    ///
    /// ```
    /// # use kvmkit_memory::SlotTable;
    /// # use kvmkit_arch_x86_64::X86_64;
    /// let table = SlotTable::<X86_64>::new(4);
    /// assert_eq!((table.max_slots(), table.page_size(), table.len()), (4, 0x1000, 0));
    /// assert!(table.is_empty() && !table.is_registered());
    /// ```
    pub fn new(max_slots: u32) -> Self {
        Self::empty(max_slots, PAGE_SIZE)
    }

    /// An empty table without a host-write bitmap, registered with `vm`,
    /// allowing as many slots as the VM reports (`KVM_CAP_NR_MEMSLOTS`, else
    /// [`FALLBACK_MAX_SLOTS`]).
    ///
    /// ```
    /// use kvmkit_memory::SlotTable;
    /// use kvmkit_arch_x86_64::X86_64;
    /// use kvmkit_core::Capability;
    /// use std::sync::Arc;
    /// # let Some(kvm) = kvmkit_test_support::kvm_or_skip!(X86_64) else { return };
    /// let vm = Arc::new(kvm.create_vm(&Default::default()).unwrap());
    /// let table = SlotTable::for_vm(vm.clone()).unwrap();
    /// assert_eq!(i64::from(table.max_slots()), i64::from(vm.check_extension(Capability::NR_MEMSLOTS)));
    /// ```
    pub fn for_vm(vm: Arc<Vm<A>>) -> Result<Self> {
        let max = vm_max_slots(&vm).unwrap_or(FALLBACK_MAX_SLOTS);
        let mut table = Self::new(max);
        table.register(vm)?;
        Ok(table)
    }
}

impl<A: Arch, B: NewBitmap + 'static> SlotTable<A, B> {
    /// The general constructor: an empty, unregistered table with any
    /// host-write bitmap `B` and any page size (a power of two of at least
    /// 4 KiB, e.g. 64 KiB for a host kernel with 64 KiB pages).
    ///
    /// ```
    /// # use kvmkit_memory::SlotTable;
    /// # use kvmkit_arch_x86_64::X86_64;
    /// use vm_memory::bitmap::AtomicBitmap;
    /// let table = SlotTable::<X86_64, AtomicBitmap>::with_page_size(4, 0x1_0000).unwrap();
    /// assert_eq!(table.page_size(), 0x1_0000);
    /// assert!(SlotTable::<X86_64>::with_page_size(4, 0x1800).is_err());
    /// ```
    pub fn with_page_size(max_slots: u32, page_size: u64) -> Result<Self> {
        if page_size < PAGE_SIZE || !page_size.is_power_of_two() {
            return Err(Error::InvalidPageSize { page_size });
        }
        Ok(Self::empty(max_slots, page_size))
    }

    fn empty(max_slots: u32, page_size: u64) -> Self {
        SlotTable {
            max_slots,
            page_size,
            by_gpa: BTreeMap::new(),
            ids: BTreeMap::new(),
            memory: GuestMemoryAtomic::new(GuestMemoryMmap::new()),
            vm: None,
        }
    }

    /// The number of slots the table allows (ids are below it).
    pub fn max_slots(&self) -> u32 {
        self.max_slots
    }

    /// The page size regions must be aligned to.
    pub fn page_size(&self) -> u64 {
        self.page_size
    }

    /// The number of slots in the table.
    pub fn len(&self) -> usize {
        self.by_gpa.len()
    }

    /// True when the table has no slots.
    pub fn is_empty(&self) -> bool {
        self.by_gpa.is_empty()
    }

    /// The VM the table is registered with.
    pub fn vm(&self) -> Option<&Arc<Vm<A>>> {
        self.vm.as_ref()
    }

    /// True when the table is registered with a VM.
    pub fn is_registered(&self) -> bool {
        self.vm.is_some()
    }

    /// The slot with id `id`.
    pub fn slot(&self, id: SlotId) -> Option<&Slot<B>> {
        self.ids.get(&id).and_then(|gpa| self.by_gpa.get(gpa))
    }

    /// The slot whose range contains `addr`, if any.
    pub fn slot_containing(&self, addr: GuestAddress) -> Option<&Slot<B>> {
        self.by_gpa
            .range(..=addr.0)
            .next_back()
            .map(|(_, s)| s)
            .filter(|s| s.contains(addr))
    }

    /// The slots in guest-physical-address order.
    ///
    /// ```
    /// # use kvmkit_memory::{RegionConfig, SlotTable};
    /// # use kvmkit_arch_x86_64::X86_64;
    /// # use vm_memory::GuestAddress;
    /// let mut t = SlotTable::<X86_64>::new(4);
    /// t.add(RegionConfig::anonymous(GuestAddress(0x8000), 0x1000)).unwrap();
    /// t.add(RegionConfig::anonymous(GuestAddress(0), 0x1000)).unwrap();
    /// let gpas: Vec<u64> = t.iter().map(|s| s.gpa().0).collect();
    /// assert_eq!(gpas, [0, 0x8000]);
    /// ```
    pub fn iter(&self) -> impl Iterator<Item = &Slot<B>> + '_ {
        self.by_gpa.values()
    }

    /// The size of all slots together, in bytes.
    pub fn total_bytes(&self) -> u64 {
        self.iter().map(Slot::len).sum()
    }

    /// A handle on the guest memory map, for devices: it sees every later
    /// change of the table.
    pub fn memory(&self) -> GuestMemoryHandle<B> {
        GuestMemoryHandle::new(self.memory.clone())
    }

    /// The current guest memory map: every slot, as a `GuestMemoryMmap`.
    pub fn guest_memory(&self) -> Arc<GuestMemoryMmap<B>> {
        self.memory.memory().into_inner()
    }

    /// Adds a region under the lowest free slot id and returns the id.
    ///
    /// Checks the region (flags, size and address alignment, overflow,
    /// overlap, file offset and length, slot count), maps its memory, and
    /// when the table is registered creates the slot in KVM.
    ///
    /// ```
    /// # use kvmkit_memory::{RegionConfig, SlotTable};
    /// # use kvmkit_arch_x86_64::X86_64;
    /// # use kvmkit_core::SlotId;
    /// # use vm_memory::GuestAddress;
    /// let mut t = SlotTable::<X86_64>::new(4);
    /// assert_eq!(t.add(RegionConfig::anonymous(GuestAddress(0), 0x2000)).unwrap(), SlotId(0));
    /// let e = t.add(RegionConfig::anonymous(GuestAddress(0x1000), 0x2000)).unwrap_err();
    /// assert_eq!(e.to_string(), "region [0x1000, 0x3000) overlaps slot 0 at [0x0, 0x2000)");
    /// ```
    pub fn add(&mut self, config: RegionConfig) -> Result<SlotId> {
        check_region(&config, self.page_size, &self.by_gpa, None)?;
        let id = lowest_free_id(self.ids.keys(), self.max_slots).ok_or(Error::TooManySlots {
            gpa: config.gpa.0,
            max_slots: self.max_slots,
        })?;
        let mut slot = Slot {
            id,
            flags: config.flags,
            region: Arc::new(map(&config)?),
            registered: false,
        };
        if let Some(vm) = &self.vm {
            check_readonly_cap(vm, &slot)?;
            kvm::set(vm, &slot, slot.flags, "add")?;
            slot.registered = true;
        }
        self.ids.insert(id, config.gpa.0);
        self.by_gpa.insert(config.gpa.0, slot);
        self.publish();
        Ok(id)
    }

    /// Adds anonymous RAM for each `(start, len)` range (for example from
    /// [`crate::pc_layout`]) with `flags`; returns the new ids in order.
    ///
    /// All or nothing: if one range fails, the ones added before it are
    /// removed again and the error is returned.
    ///
    /// ```
    /// # use kvmkit_memory::{PcHoles, SlotTable};
    /// # use kvmkit_arch_x86_64::X86_64;
    /// use kvmkit_core::MemoryFlags;
    /// use vm_memory::GuestAddress;
    /// let mut t = SlotTable::<X86_64>::new(2);
    /// let ranges = PcHoles::default().layout(0x20_0000).unwrap();
    /// t.add_ram(&ranges, MemoryFlags::LOG_DIRTY_PAGES).unwrap();
    /// assert!(t.iter().all(|s| s.logs_dirty_pages()));
    /// // A third slot does not fit: nothing of this call stays.
    /// let more = [(GuestAddress(0x4000_0000), 0x1000), (GuestAddress(0x5000_0000), 0x1000)];
    /// assert!(t.remove(kvmkit_core::SlotId(1)).is_ok());
    /// assert!(t.add_ram(&more, MemoryFlags::NONE).is_err());
    /// assert_eq!(t.len(), 1);
    /// ```
    pub fn add_ram(
        &mut self,
        ranges: &[(GuestAddress, u64)],
        flags: MemoryFlags,
    ) -> Result<Vec<SlotId>> {
        let mut ids = Vec::with_capacity(ranges.len());
        for &(gpa, len) in ranges {
            let config = RegionConfig {
                flags,
                ..RegionConfig::anonymous(gpa, len)
            };
            match self.add(config) {
                Ok(id) => ids.push(id),
                Err(e) => {
                    for id in ids.into_iter().rev() {
                        // A slot this call just added; if KVM refuses to
                        // delete it, it stays in the table, consistently.
                        let _ = self.remove(id);
                    }
                    return Err(e);
                }
            }
        }
        Ok(ids)
    }

    /// Removes slot `id`: deletes it from KVM first (when registered), then
    /// from the table. Returns it; its mapping lives on while the returned
    /// slot or any memory snapshot holds it.
    ///
    /// ```
    /// # use kvmkit_memory::{RegionConfig, SlotTable};
    /// # use kvmkit_arch_x86_64::X86_64;
    /// # use kvmkit_core::SlotId;
    /// # use vm_memory::GuestAddress;
    /// let mut t = SlotTable::<X86_64>::new(4);
    /// t.add(RegionConfig::anonymous(GuestAddress(0), 0x1000)).unwrap();
    /// t.add(RegionConfig::anonymous(GuestAddress(0x1000), 0x1000)).unwrap();
    /// let old = t.remove(SlotId(0)).unwrap();
    /// assert_eq!(old.gpa(), GuestAddress(0));
    /// // The lowest free id is reused.
    /// assert_eq!(t.add(RegionConfig::anonymous(GuestAddress(0x8000), 0x1000)).unwrap(), SlotId(0));
    /// assert_eq!(t.remove(SlotId(7)).unwrap_err().to_string(), "no memory slot 7");
    /// ```
    pub fn remove(&mut self, id: SlotId) -> Result<Slot<B>> {
        let gpa = *self.ids.get(&id).ok_or(Error::UnknownSlot { slot: id })?;
        let slot = self
            .by_gpa
            .get_mut(&gpa)
            .expect("`ids` and `by_gpa` hold the same slots");
        if slot.registered {
            let vm = self
                .vm
                .as_ref()
                .expect("a registered slot belongs to a registered table");
            kvm::delete(vm, slot)?;
            slot.registered = false;
        }
        self.ids.remove(&id);
        let slot = self
            .by_gpa
            .remove(&gpa)
            .expect("`ids` and `by_gpa` hold the same slots");
        self.publish();
        Ok(slot)
    }

    /// Resizes slot `id` to `len` bytes, keeping its id, address, flags and
    /// backing. KVM cannot resize a slot, so this deletes it and adds it
    /// again with a new mapping; anonymous memory is copied over (up to the
    /// smaller size), file-backed memory is the file's. Pause the vCPUs
    /// around it: in between, guest accesses to the slot are MMIO exits.
    ///
    /// ```
    /// # use kvmkit_memory::{RegionConfig, SlotTable};
    /// # use kvmkit_arch_x86_64::X86_64;
    /// # use vm_memory::{Bytes, GuestAddress};
    /// let mut t = SlotTable::<X86_64>::new(4);
    /// let id = t.add(RegionConfig::anonymous(GuestAddress(0), 0x1000)).unwrap();
    /// t.guest_memory().write_obj(7u8, GuestAddress(0x10)).unwrap();
    /// t.resize(id, 0x3000).unwrap();
    /// assert_eq!(t.slot(id).unwrap().len(), 0x3000);
    /// assert_eq!(t.guest_memory().read_obj::<u8>(GuestAddress(0x10)).unwrap(), 7);
    /// ```
    pub fn resize(&mut self, id: SlotId, len: u64) -> Result<()> {
        let gpa = *self.ids.get(&id).ok_or(Error::UnknownSlot { slot: id })?;
        let (flags, backing, registered) = {
            let old = &self.by_gpa[&gpa];
            if old.len() == len {
                return Ok(());
            }
            let backing = match old.file_offset().cloned() {
                None => Backing::Anonymous,
                Some(f) if old.is_private_file() => Backing::FilePrivate(f),
                Some(f) => Backing::File(f),
            };
            (old.flags, backing, old.registered)
        };
        let config = RegionConfig {
            gpa: GuestAddress(gpa),
            len,
            flags,
            backing,
        };
        check_region(&config, self.page_size, &self.by_gpa, Some(id))?;
        let mut new = Slot {
            id,
            flags,
            region: Arc::new(map(&config)?),
            registered: false,
        };
        let old = self
            .by_gpa
            .get_mut(&gpa)
            .expect("`ids` and `by_gpa` hold the same slots");
        let vm = self.vm.as_ref().filter(|_| registered);
        if let Some(vm) = vm {
            kvm::delete(vm, old)?;
            old.registered = false;
        }
        // Shared files keep their contents in the file; anonymous and
        // private mappings have them only in this process.
        if !matches!(config.backing, Backing::File(_)) {
            copy_contents(old, &new)?;
        }
        if let Some(vm) = vm {
            if let Err(e) = kvm::set(vm, &new, flags, "add") {
                // Put the old slot back as it was; if even that fails it
                // stays in the table, unregistered, and says so.
                if kvm::set(vm, old, flags, "add").is_ok() {
                    old.registered = true;
                }
                return Err(e);
            }
            new.registered = true;
        }
        *old = new;
        self.publish();
        Ok(())
    }

    /// Turns dirty logging (`KVM_MEM_LOG_DIRTY_PAGES`) of slot `id` on or
    /// off; when registered, KVM is told first (a flags-only update of the
    /// slot).
    ///
    /// ```
    /// # use kvmkit_memory::{RegionConfig, SlotTable};
    /// # use kvmkit_arch_x86_64::X86_64;
    /// # use vm_memory::GuestAddress;
    /// let mut t = SlotTable::<X86_64>::new(4);
    /// let id = t.add(RegionConfig::anonymous(GuestAddress(0), 0x1000)).unwrap();
    /// t.set_dirty_logging(id, true).unwrap();
    /// assert!(t.slot(id).unwrap().logs_dirty_pages());
    /// ```
    pub fn set_dirty_logging(&mut self, id: SlotId, on: bool) -> Result<()> {
        let gpa = *self.ids.get(&id).ok_or(Error::UnknownSlot { slot: id })?;
        let slot = self
            .by_gpa
            .get_mut(&gpa)
            .expect("`ids` and `by_gpa` hold the same slots");
        let flags = slot.flags.with(MemoryFlags::LOG_DIRTY_PAGES, on);
        if flags == slot.flags {
            return Ok(());
        }
        if slot.registered {
            let vm = self
                .vm
                .as_ref()
                .expect("a registered slot belongs to a registered table");
            kvm::set(vm, slot, flags, "update the flags of")?;
        }
        slot.flags = flags;
        Ok(())
    }

    /// Registers every slot with `vm` and keeps the VM: later changes go to
    /// KVM as they are made, and dropping the table deletes its slots from
    /// KVM before unmapping them.
    ///
    /// The slot limit becomes the smaller of the table's and the VM's
    /// (`KVM_CAP_NR_MEMSLOTS`); a slot id beyond it, or a read-only slot on a
    /// VM without `KVM_CAP_READONLY_MEM`, is refused before anything is
    /// registered. If KVM refuses a slot, the ones registered before it are
    /// deleted again.
    ///
    /// ```
    /// use kvmkit_memory::{pc_layout, SlotTable};
    /// use kvmkit_arch_x86_64::X86_64;
    /// use kvmkit_core::MemoryFlags;
    /// use std::sync::Arc;
    /// # let Some(kvm) = kvmkit_test_support::kvm_or_skip!(X86_64) else { return };
    /// let mut table = SlotTable::<X86_64>::new(16);
    /// table.add_ram(&pc_layout(4 << 20).unwrap(), MemoryFlags::NONE).unwrap();
    /// let vm = Arc::new(kvm.create_vm(&Default::default()).unwrap());
    /// table.register(vm.clone()).unwrap();
    /// assert!(table.iter().all(|s| s.is_registered()));
    /// assert!(table.register(vm).is_err()); // once only
    /// ```
    pub fn register(&mut self, vm: Arc<Vm<A>>) -> Result<()> {
        if self.vm.is_some() {
            return Err(Error::AlreadyRegistered);
        }
        let max_slots = vm_max_slots(&vm).map_or(self.max_slots, |m| m.min(self.max_slots));
        if let Some(&slot) = self.ids.keys().find(|id| id.0 >= max_slots) {
            return Err(Error::SlotLimit { slot, max_slots });
        }
        for slot in self.by_gpa.values() {
            check_readonly_cap(&vm, slot)?;
        }
        let gpas: Vec<u64> = self.by_gpa.keys().copied().collect();
        for (i, gpa) in gpas.iter().enumerate() {
            let slot = self
                .by_gpa
                .get_mut(gpa)
                .expect("the keys were just read from the map");
            if let Err(e) = kvm::set(&vm, slot, slot.flags, "add") {
                for gpa in &gpas[..i] {
                    let s = self
                        .by_gpa
                        .get_mut(gpa)
                        .expect("the keys were just read from the map");
                    if kvm::delete(&vm, s).is_ok() {
                        s.registered = false;
                    }
                }
                if self.by_gpa.values().any(|s| s.registered) {
                    // Some could not be deleted again: stay bound so that
                    // `Drop` keeps their mappings safe.
                    self.vm = Some(vm);
                }
                return Err(e);
            }
            slot.registered = true;
        }
        self.max_slots = max_slots;
        self.vm = Some(vm);
        Ok(())
    }

    /// Deletes every slot from KVM and gives the VM back; the table keeps its
    /// slots and mappings and can be registered again. Returns `None` when
    /// the table was not registered.
    ///
    /// If KVM refuses to delete a slot the table stays registered (the slots
    /// deleted so far say so) and the error is returned.
    ///
    /// ```
    /// use kvmkit_memory::{RegionConfig, SlotTable};
    /// use kvmkit_arch_x86_64::X86_64;
    /// use std::sync::Arc;
    /// use vm_memory::GuestAddress;
    /// # let Some(kvm) = kvmkit_test_support::kvm_or_skip!(X86_64) else { return };
    /// let vm = Arc::new(kvm.create_vm(&Default::default()).unwrap());
    /// let mut table = SlotTable::for_vm(vm.clone()).unwrap();
    /// let id = table.add(RegionConfig::anonymous(GuestAddress(0), 0x1000)).unwrap();
    /// let back = table.unregister().unwrap().expect("it was registered");
    /// assert!(Arc::ptr_eq(&back, &vm));
    /// assert!(!table.slot(id).unwrap().is_registered());
    /// assert!(table.unregister().unwrap().is_none());
    /// ```
    pub fn unregister(&mut self) -> Result<Option<Arc<Vm<A>>>> {
        let Some(vm) = self.vm.as_ref() else {
            return Ok(None);
        };
        for slot in self.by_gpa.values_mut().filter(|s| s.registered) {
            kvm::delete(vm, slot)?;
            slot.registered = false;
        }
        Ok(self.vm.take())
    }

    /// Publishes the table's slots as the new guest memory map.
    fn publish(&self) {
        let regions: Vec<_> = self.by_gpa.values().map(|s| s.region.clone()).collect();
        let map = if regions.is_empty() {
            GuestMemoryMmap::new()
        } else {
            GuestMemoryMmap::from_arc_regions(regions)
                .expect("the table's slots are non-empty, sorted and disjoint")
        };
        self.memory
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .replace(map);
    }
}

impl<A: Arch, B: NewBitmap + 'static> Drop for SlotTable<A, B> {
    fn drop(&mut self) {
        let Some(vm) = self.vm.take() else { return };
        for slot in self.by_gpa.values_mut().filter(|s| s.registered) {
            if kvm::delete(&vm, slot).is_err() {
                // KVM may still map this memory into the guest: never unmap it.
                std::mem::forget(Arc::clone(&slot.region));
            }
        }
    }
}

impl<A: Arch, B: NewBitmap + 'static> fmt::Debug for SlotTable<A, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlotTable")
            .field("arch", &A::NAME)
            .field("max_slots", &self.max_slots)
            .field("page_size", &self.page_size)
            .field("slots", &self.by_gpa.values().collect::<Vec<_>>())
            .field("registered", &self.vm.is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvmkit_arch_x86_64::X86_64;
    use std::io::Write;
    use vm_memory::bitmap::{AtomicBitmap, Bitmap};
    use vm_memory::{Bytes, FileOffset, GuestMemoryBackend, GuestMemoryRegion};
    use vmm_sys_util::tempfile::TempFile;

    type Table = SlotTable<X86_64>;

    fn anon(gpa: u64, len: u64) -> RegionConfig {
        RegionConfig::anonymous(GuestAddress(gpa), len)
    }

    fn err(t: &mut Table, c: RegionConfig) -> String {
        let before = t.len();
        let e = t.add(c).unwrap_err().to_string();
        assert_eq!(
            t.len(),
            before,
            "a refused region leaves the table as it was"
        );
        e
    }

    #[test]
    fn checks_refuse_bad_regions_with_clear_messages() {
        let mut t = Table::new(8);
        t.add(anon(0x10_0000, 0x10_0000)).unwrap();
        assert_eq!(err(&mut t, anon(0x1000, 0)), "region at 0x1000 has size 0");
        assert_eq!(
            err(&mut t, anon(0x1800, 0x1000)),
            "region at 0x1800 is not aligned to the 0x1000-byte page size"
        );
        assert_eq!(
            err(&mut t, anon(0x1000, 0x1800)),
            "region at 0x1000 has size 0x1800, not a multiple of the 0x1000-byte page size"
        );
        assert_eq!(
            err(&mut t, anon(0xffff_ffff_ffff_f000, 0x2000)),
            "region at 0xfffffffffffff000 of size 0x2000 runs past the end of the guest physical address space"
        );
        // Ending exactly at 2^64 also overflows, as in KVM.
        assert!(matches!(
            t.add(anon(0xffff_ffff_ffff_f000, 0x1000)),
            Err(Error::AddressOverflow { .. })
        ));
        // Overlap from below, from above, inside and around.
        assert_eq!(
            err(&mut t, anon(0xf_f000, 0x2000)),
            "region [0xff000, 0x101000) overlaps slot 0 at [0x100000, 0x200000)"
        );
        assert_eq!(
            err(&mut t, anon(0x1f_f000, 0x2000)),
            "region [0x1ff000, 0x201000) overlaps slot 0 at [0x100000, 0x200000)"
        );
        assert!(matches!(
            t.add(anon(0x18_0000, 0x1000)),
            Err(Error::Overlap { .. })
        ));
        assert!(matches!(
            t.add(anon(0, 0x100_0000)),
            Err(Error::Overlap {
                slot: SlotId(0),
                ..
            })
        ));
        let bad = RegionConfig {
            flags: MemoryFlags::from_bits(4),
            ..anon(0, 0x1000)
        };
        assert_eq!(
            err(&mut t, bad),
            "region at 0x0 has unsupported memory flags 0x4"
        );
        // Adjacent regions are fine on both sides.
        t.add(anon(0xf_f000, 0x1000)).unwrap();
        t.add(anon(0x20_0000, 0x1000)).unwrap();
        assert_eq!(t.len(), 3);
    }

    #[test]
    fn page_size_is_a_parameter() {
        let mut t = Table::with_page_size(4, 0x1_0000).unwrap();
        assert_eq!(
            err(&mut t, anon(0x1000, 0x1_0000)),
            "region at 0x1000 is not aligned to the 0x10000-byte page size"
        );
        t.add(anon(0x1_0000, 0x2_0000)).unwrap();
        assert_eq!(
            Table::with_page_size(4, 0x800).unwrap_err().to_string(),
            "page size 0x800 is not a power of two of at least 0x1000"
        );
    }

    #[test]
    fn ids_are_lowest_free_reused_and_bounded() {
        let mut t = Table::new(3);
        let ids: Vec<_> = (0..3)
            .map(|i| t.add(anon(i * 0x1000, 0x1000)).unwrap())
            .collect();
        assert_eq!(ids, [SlotId(0), SlotId(1), SlotId(2)]);
        assert_eq!(
            err(&mut t, anon(0x8000, 0x1000)),
            "cannot add the region at 0x8000: all 3 memory slots are in use"
        );
        t.remove(SlotId(1)).unwrap();
        t.remove(SlotId(0)).unwrap();
        assert_eq!(t.add(anon(0x8000, 0x1000)).unwrap(), SlotId(0));
        assert_eq!(t.add(anon(0x9000, 0x1000)).unwrap(), SlotId(1));
        assert_eq!(t.slot(SlotId(1)).unwrap().gpa(), GuestAddress(0x9000));
        assert!(t.add(anon(0xa000, 0x1000)).is_err());
        // A table allowing no slots at all.
        let mut none = Table::new(0);
        assert!(matches!(
            none.add(anon(0, 0x1000)),
            Err(Error::TooManySlots { max_slots: 0, .. })
        ));
    }

    #[test]
    fn unknown_slots_are_named() {
        let mut t = Table::new(2);
        assert_eq!(
            t.remove(SlotId(5)).unwrap_err().to_string(),
            "no memory slot 5"
        );
        assert!(matches!(
            t.resize(SlotId(1), 0x1000),
            Err(Error::UnknownSlot { slot: SlotId(1) })
        ));
        assert!(matches!(
            t.set_dirty_logging(SlotId(0), true),
            Err(Error::UnknownSlot { slot: SlotId(0) })
        ));
    }

    #[test]
    fn lookups_and_iteration_follow_addresses() {
        let mut t = Table::new(8);
        let ranges = crate::pc_layout(0x20_0000).unwrap();
        let ids = t.add_ram(&ranges, MemoryFlags::NONE).unwrap();
        let high = t.add(anon(0x1_0000_0000, 0x1000)).unwrap();
        assert_eq!(ids, [SlotId(0), SlotId(1)]);
        assert_eq!(t.total_bytes(), 0x20_1000);
        let at = |a| t.slot_containing(GuestAddress(a)).map(|s| s.id());
        assert_eq!(at(0), Some(SlotId(0)));
        assert_eq!(at(0x9_ffff), Some(SlotId(0)));
        assert_eq!(at(0xa_0000), None);
        assert_eq!(at(0xf_ffff), None);
        assert_eq!(at(0x10_0000), Some(SlotId(1)));
        assert_eq!(at(0x25_ffff), Some(SlotId(1)));
        assert_eq!(at(0x26_0000), None);
        assert_eq!(at(0x1_0000_0fff), Some(high));
        assert_eq!(at(u64::MAX), None);
        let order: Vec<_> = t.iter().map(|s| s.id()).collect();
        assert_eq!(order, [SlotId(0), SlotId(1), high]);
        // The published map has the same regions, in the same order.
        let mem = t.guest_memory();
        assert_eq!(mem.num_regions(), 3);
        let starts: Vec<_> = mem.iter().map(|r| r.start_addr().0).collect();
        assert_eq!(starts, [0, 0x10_0000, 0x1_0000_0000]);
        assert!(format!("{t:?}").contains("registered: false"));
        assert!(format!("{:?}", t.memory()).contains("regions: 3"));
    }

    #[test]
    fn add_ram_is_all_or_nothing() {
        let mut t = Table::new(8);
        t.add(anon(0x10_0000, 0x1000)).unwrap();
        let e = t
            .add_ram(
                &[(GuestAddress(0), 0x1000), (GuestAddress(0x10_0000), 0x1000)],
                MemoryFlags::NONE,
            )
            .unwrap_err();
        assert!(matches!(e, Error::Overlap { .. }));
        assert_eq!(t.len(), 1);
        assert!(t.slot_containing(GuestAddress(0)).is_none());
    }

    #[test]
    fn handles_see_changes_and_snapshots_keep_their_mappings() {
        let mut t = Table::new(4);
        let handle = t.memory();
        let before = handle.snapshot();
        let id = t.add(anon(0x1000, 0x1000)).unwrap();
        assert_eq!(before.num_regions(), 0, "an old snapshot does not change");
        let snap = handle.memory();
        snap.write_obj(0x5au8, GuestAddress(0x1004)).unwrap();
        let removed = t.remove(id).unwrap();
        assert!(!removed.is_registered());
        assert_eq!(t.guest_memory().num_regions(), 0);
        // The snapshot taken before the removal still reaches the memory.
        assert_eq!(snap.read_obj::<u8>(GuestAddress(0x1004)).unwrap(), 0x5a);
        assert!(handle
            .memory()
            .read_obj::<u8>(GuestAddress(0x1004))
            .is_err());
    }

    #[test]
    fn flags_are_kept_and_dirty_logging_toggles() {
        let mut t = Table::new(4);
        let rom = t.add(anon(0xf_0000, 0x1_0000).read_only(true)).unwrap();
        let ram = t.add(anon(0, 0x1000)).unwrap();
        assert!(t.slot(rom).unwrap().is_read_only());
        t.set_dirty_logging(ram, true).unwrap();
        t.set_dirty_logging(ram, true).unwrap();
        let s = t.slot(ram).unwrap();
        assert!(s.logs_dirty_pages());
        assert_eq!(s.user_memory_region().flags, MemoryFlags::LOG_DIRTY_PAGES);
        t.set_dirty_logging(rom, true).unwrap();
        assert_eq!(
            t.slot(rom).unwrap().flags(),
            MemoryFlags::READONLY | MemoryFlags::LOG_DIRTY_PAGES
        );
        t.set_dirty_logging(ram, false).unwrap();
        assert_eq!(t.slot(ram).unwrap().flags(), MemoryFlags::NONE);
    }

    #[test]
    fn resize_keeps_id_address_flags_and_contents() {
        let mut t = Table::new(4);
        let a = t.add(anon(0, 0x2000).dirty_logging(true)).unwrap();
        t.add(anon(0x4000, 0x1000)).unwrap();
        let mem = t.guest_memory();
        mem.write_obj(0x1122_3344u32, GuestAddress(0x1ffc)).unwrap();
        mem.write_obj(0x99u8, GuestAddress(0x10)).unwrap();
        t.resize(a, 0x4000).unwrap();
        let s = t.slot(a).unwrap();
        assert_eq!((s.gpa().0, s.len()), (0, 0x4000));
        assert!(s.logs_dirty_pages());
        let mem = t.guest_memory();
        assert_eq!(
            mem.read_obj::<u32>(GuestAddress(0x1ffc)).unwrap(),
            0x1122_3344
        );
        // Growing into the next slot is an overlap; the slot is unchanged.
        assert_eq!(
            t.resize(a, 0x5000).unwrap_err().to_string(),
            "region [0x0, 0x5000) overlaps slot 1 at [0x4000, 0x5000)"
        );
        assert!(matches!(t.resize(a, 0), Err(Error::ZeroSize { gpa: 0 })));
        t.resize(a, 0x1000).unwrap();
        assert_eq!(t.slot(a).unwrap().len(), 0x1000);
        assert_eq!(
            t.guest_memory().read_obj::<u8>(GuestAddress(0x10)).unwrap(),
            0x99
        );
        // Same size: nothing to do.
        t.resize(a, 0x1000).unwrap();
        assert_eq!(t.total_bytes(), 0x2000);
    }

    fn temp_file(len: u64) -> TempFile {
        let f = TempFile::new().unwrap();
        f.as_file().set_len(len).unwrap();
        f
    }

    #[test]
    fn file_backed_regions_share_the_file() {
        let tmp = temp_file(0x3000);
        let mut file = tmp.as_file().try_clone().unwrap();
        file.write_all(b"kvmkit").unwrap();
        let fo = FileOffset::new(tmp.as_file().try_clone().unwrap(), 0);
        let mut t = Table::new(4);
        let id = t
            .add(RegionConfig::file(GuestAddress(0x10_0000), 0x3000, fo))
            .unwrap();
        let mut buf = [0u8; 6];
        t.guest_memory()
            .read_slice(&mut buf, GuestAddress(0x10_0000))
            .unwrap();
        assert_eq!(&buf, b"kvmkit");
        assert_eq!(t.slot(id).unwrap().file_offset().unwrap().start(), 0);
        // Resizing keeps the file's contents without copying.
        t.resize(id, 0x2000).unwrap();
        t.guest_memory()
            .read_slice(&mut buf, GuestAddress(0x10_0000))
            .unwrap();
        assert_eq!(&buf, b"kvmkit");
        // Writes reach the file.
        t.guest_memory()
            .write_slice(b"KVM", GuestAddress(0x10_0000))
            .unwrap();
        let mut back = [0u8; 3];
        std::os::unix::fs::FileExt::read_exact_at(tmp.as_file(), &mut back, 0).unwrap();
        assert_eq!(&back, b"KVM");
    }

    #[test]
    fn file_offset_and_length_are_checked() {
        let tmp = temp_file(0x2000);
        let fo = |off| FileOffset::new(tmp.as_file().try_clone().unwrap(), off);
        let mut t = Table::new(4);
        assert_eq!(
            err(
                &mut t,
                RegionConfig::file(GuestAddress(0), 0x1000, fo(0x800))
            ),
            "region at 0x0: file offset 0x800 is not a multiple of the 0x1000-byte page size"
        );
        assert_eq!(
            err(&mut t, RegionConfig::file(GuestAddress(0), 0x2000, fo(0x1000))),
            "region at 0x0: the backing file has 0x2000 bytes, too few for 0x2000 bytes at offset 0x1000"
        );
        assert!(matches!(
            t.add(RegionConfig::file(
                GuestAddress(0),
                0x1000,
                fo(u64::MAX - 0xfff)
            )),
            Err(Error::FileTooShort { .. })
        ));
        t.add(RegionConfig::file(GuestAddress(0), 0x1000, fo(0x1000)))
            .unwrap();
        // Not a regular file: no length to check (here mmap itself refuses).
        let null = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")
            .unwrap();
        let e = t
            .add(RegionConfig::file(
                GuestAddress(0x1000),
                0x1000,
                FileOffset::new(null, 0),
            ))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot map 0x1000 bytes of host memory for the region at 0x1000"
        );
        assert!(std::error::Error::source(&e).is_some());
    }

    #[test]
    fn host_writes_are_tracked_with_a_bitmap() {
        let mut t = SlotTable::<X86_64, AtomicBitmap>::with_page_size(4, PAGE_SIZE).unwrap();
        let id = t.add(anon(0x10_0000, 0x4000)).unwrap();
        t.guest_memory()
            .write_obj(1u8, GuestAddress(0x10_2010))
            .unwrap();
        let slot = t.slot(id).unwrap();
        let bitmap = slot.region().bitmap();
        assert!(!bitmap.dirty_at(0x1000));
        assert!(bitmap.dirty_at(0x2000));
    }

    #[test]
    fn tables_and_handles_cross_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Table>();
        send_sync::<SlotTable<X86_64, AtomicBitmap>>();
        send_sync::<GuestMemoryHandle>();
        send_sync::<Slot>();
    }

    #[test]
    fn unregistered_table_has_no_vm() {
        let mut t = Table::new(4);
        assert!(t.vm().is_none());
        assert!(t.unregister().unwrap().is_none());
    }
}
