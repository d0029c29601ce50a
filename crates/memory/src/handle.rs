//! The read-only handle through which the rest of the VMM reaches guest memory.

use std::fmt;
use std::sync::Arc;
use vm_memory::bitmap::Bitmap;
use vm_memory::{GuestAddressSpace, GuestMemoryAtomic, GuestMemoryLoadGuard, GuestMemoryMmap};

/// A cloneable handle on the guest memory map of a [`crate::SlotTable`].
///
/// It implements vm-memory's [`GuestAddressSpace`], the trait rust-vmm devices
/// (virtio queues, loaders) are generic over: [`GuestAddressSpace::memory`]
/// returns a consistent snapshot of the map (a `GuestMemoryMmap<B>` behind a
/// guard) that stays valid, with every mapping in it, however the table
/// changes afterwards. Only the table changes the map; this handle cannot,
/// which is why it wraps `GuestMemoryAtomic` rather than exposing it.
///
/// ```
/// use kvmkit_memory::{RegionConfig, SlotTable};
/// use kvmkit_arch_x86_64::X86_64;
/// use vm_memory::{Bytes, GuestAddress, GuestAddressSpace};
/// let mut table = SlotTable::<X86_64>::new(8);
/// let handle = table.memory();            // e.g. given to a device
/// table.add(RegionConfig::anonymous(GuestAddress(0), 0x1000)).unwrap();
/// let mem = handle.memory();              // a snapshot that has the new slot
/// mem.write_obj(0xabcd_u16, GuestAddress(0x10)).unwrap();
/// assert_eq!(table.guest_memory().read_obj::<u16>(GuestAddress(0x10)).unwrap(), 0xabcd);
/// ```
pub struct GuestMemoryHandle<B: Bitmap + 'static = ()> {
    inner: GuestMemoryAtomic<GuestMemoryMmap<B>>,
}

impl<B: Bitmap + 'static> GuestMemoryHandle<B> {
    pub(crate) fn new(inner: GuestMemoryAtomic<GuestMemoryMmap<B>>) -> Self {
        GuestMemoryHandle { inner }
    }

    /// The current map, to keep: it holds every mapping in it alive.
    pub fn snapshot(&self) -> Arc<GuestMemoryMmap<B>> {
        self.inner.memory().into_inner()
    }
}

impl<B: Bitmap + 'static> Clone for GuestMemoryHandle<B> {
    fn clone(&self) -> Self {
        GuestMemoryHandle {
            inner: self.inner.clone(),
        }
    }
}

impl<B: Bitmap + 'static> GuestAddressSpace for GuestMemoryHandle<B> {
    type M = GuestMemoryMmap<B>;
    type T = GuestMemoryLoadGuard<GuestMemoryMmap<B>>;

    fn memory(&self) -> Self::T {
        self.inner.memory()
    }
}

impl<B: Bitmap + 'static> fmt::Debug for GuestMemoryHandle<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use vm_memory::GuestMemoryBackend;
        f.debug_struct("GuestMemoryHandle")
            .field("regions", &self.inner.memory().num_regions())
            .finish()
    }
}
