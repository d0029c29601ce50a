//! The FLIC (floating interrupt controller, `KVM_DEV_TYPE_FLIC`): s390x's
//! in-kernel controller for floating interruptions (I/O, service signal,
//! adapter interrupts) as a `kvmkit_irq::InterruptController`.
//!
//! s390x has no interrupt lines. A device signals through an **adapter
//! interrupt**: it sets its bit in an indicator area in guest memory, a
//! summary bit, then the I/O adapter interrupt of its interruption subclass
//! (ISC 0 to 7) is made pending. KVM models this with adapters registered on
//! the FLIC (`KVM_DEV_FLIC_ADAPTER_REGISTER`: id, ISC) and GSI routes of
//! type `KVM_IRQ_ROUTING_S390_ADAPTER` (indicator and summary addresses and
//! bit offsets, adapter id). So, for this controller:
//!
//! - **`irq` is a GSI** of the adapter routing table this FLIC keeps
//!   (`0 .. 4096`, KVM's `KVM_MAX_IRQ_ROUTES`); [`Flic::set_adapter_route`]
//!   configures one (and pushes the table with `KVM_SET_GSI_ROUTING`).
//! - **`register_irqfd(fd, gsi, None)`** is `KVM_IRQFD`: when `fd` is
//!   signalled the kernel sets the route's indicator and summary bits and
//!   injects the adapter interrupt (virtio-ccw's fast path). Resample fds
//!   are unsupported: adapter interrupts are edge-like messages.
//! - **`set_irq(gsi, true)`** injects the route's adapter interrupt
//!   (`KVM_DEV_FLIC_ENQUEUE` of an I/O interruption with the AI bit and the
//!   adapter's ISC) without touching indicators: the device model sets its
//!   indicator bits in guest memory first, as QEMU's virtio-ccw does on its
//!   non-irqfd path. `set_irq(gsi, false)` does nothing: there is no level
//!   to lower.
//! - **`signal_msi`** is unsupported: s390x KVM has no MSI routes (zPCI
//!   MSIs are adapter routes too).
//!
//! The service signal that completes an SCLP call is raised through
//! [`ServiceSignal`]. None of this has run here: there is no s390x host.

use crate::sclp::ServiceSignal;
use crate::uapi::{
    kvm_irq_routing, kvm_irq_routing_entry, kvm_irq_routing_s390_adapter, kvm_irqfd,
    kvm_s390_ext_info, kvm_s390_io_adapter, kvm_s390_io_info, kvm_s390_irq, kvm_s390_irq_u,
    KVM_DEV_TYPE_FLIC, KVM_IRQFD_FLAG_DEASSIGN, KVM_IRQ_ROUTING_S390_ADAPTER,
    KVM_S390_INT_IO_AI_MASK, KVM_S390_INT_SERVICE,
};
use crate::{sys, Error, S390Vm};
use kvmkit_irq::{check_range, InterruptController, Msi};
use std::collections::BTreeMap;
use std::fs::File;
use std::mem::{offset_of, size_of};
use std::os::fd::AsRawFd;
use std::sync::{Mutex, MutexGuard};
use vmm_sys_util::eventfd::EventFd;

/// How many GSIs the FLIC's routing table has (`KVM_MAX_IRQ_ROUTES`).
pub const FLIC_GSIS: u32 = 4096;
/// How many I/O adapters KVM allows (`MAX_S390_IO_ADAPTERS`: 8 per ISC).
pub const FLIC_ADAPTERS: u32 = 64;
/// The I/O-interruption-word bit of an adapter interruption.
pub const IO_INT_WORD_AI: u32 = 0x8000_0000;

/// An adapter route: where the kernel sets the indicator and summary bits
/// before injecting adapter `adapter_id`'s interrupt.
///
/// ```
/// // virtio-ccw queue 2 of a device whose indicators are at 0x9000.
/// let r = kvmkit_arch_s390x::AdapterRoute {
///     adapter_id: 0, ind_addr: 0x9000, ind_offset: 2, summary_addr: 0x9100, summary_offset: 0,
/// };
/// assert_eq!(r.ind_offset, 2);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AdapterRoute {
    /// The adapter (registered with [`Flic::register_adapter`]).
    pub adapter_id: u32,
    /// Guest address of the indicator area.
    pub ind_addr: u64,
    /// Bit offset of this route's indicator in it.
    pub ind_offset: u64,
    /// Guest address of the summary indicator.
    pub summary_addr: u64,
    /// Bit offset of the summary indicator.
    pub summary_offset: u32,
}

/// The `kvm_s390_irq` of an I/O adapter interruption for `isc`.
///
/// ```
/// let irq = kvmkit_arch_s390x::adapter_irq(3);
/// assert_eq!(irq.type_, 0x0400_0000); // KVM_S390_INT_IO(1, 0, 0, 0)
/// ```
pub fn adapter_irq(isc: u8) -> kvm_s390_irq {
    kvm_s390_irq {
        type_: u64::from(KVM_S390_INT_IO_AI_MASK),
        u: kvm_s390_irq_u {
            io: kvm_s390_io_info {
                subchannel_id: 0,
                subchannel_nr: 0,
                io_int_parm: 0,
                io_int_word: IO_INT_WORD_AI | (u32::from(isc & 7) << 27),
            },
        },
    }
}

/// The `kvm_s390_irq` of a service-signal external interruption.
///
/// ```
/// assert_eq!(kvmkit_arch_s390x::service_irq(0x3000).type_, 0xffff_2401);
/// ```
pub fn service_irq(param: u32) -> kvm_s390_irq {
    kvm_s390_irq {
        type_: u64::from(KVM_S390_INT_SERVICE),
        u: kvm_s390_irq_u {
            ext: kvm_s390_ext_info {
                ext_params: param,
                pad: 0,
                ext_params2: 0,
            },
        },
    }
}

/// The argument of `KVM_SET_GSI_ROUTING` for these routes, in the host's
/// byte order: the `kvm_irq_routing` header, then one entry per route.
///
/// ```
/// use kvmkit_arch_s390x::{routing_table, AdapterRoute};
/// let t = routing_table(&[(5, AdapterRoute { adapter_id: 1, ..Default::default() })]);
/// assert_eq!(t.len(), 8 + 48);
/// assert_eq!(u32::from_ne_bytes(t[0..4].try_into().unwrap()), 1); // nr
/// assert_eq!(u32::from_ne_bytes(t[8..12].try_into().unwrap()), 5); // gsi
/// ```
pub fn routing_table(routes: &[(u32, AdapterRoute)]) -> Vec<u8> {
    let hdr = size_of::<kvm_irq_routing>();
    let esz = size_of::<kvm_irq_routing_entry>();
    let mut t = vec![0u8; hdr + esz * routes.len()];
    let nr = u32::try_from(routes.len()).unwrap_or(u32::MAX);
    put(&mut t, offset_of!(kvm_irq_routing, nr), &nr.to_ne_bytes());
    for (i, (gsi, r)) in routes.iter().enumerate() {
        let e = hdr + i * esz;
        let a = e + offset_of!(kvm_irq_routing_entry, u);
        let f = |field: usize| a + field;
        put(
            &mut t,
            e + offset_of!(kvm_irq_routing_entry, gsi),
            &gsi.to_ne_bytes(),
        );
        put(
            &mut t,
            e + offset_of!(kvm_irq_routing_entry, type_),
            &KVM_IRQ_ROUTING_S390_ADAPTER.to_ne_bytes(),
        );
        put(
            &mut t,
            f(offset_of!(kvm_irq_routing_s390_adapter, ind_addr)),
            &r.ind_addr.to_ne_bytes(),
        );
        put(
            &mut t,
            f(offset_of!(kvm_irq_routing_s390_adapter, summary_addr)),
            &r.summary_addr.to_ne_bytes(),
        );
        put(
            &mut t,
            f(offset_of!(kvm_irq_routing_s390_adapter, ind_offset)),
            &r.ind_offset.to_ne_bytes(),
        );
        put(
            &mut t,
            f(offset_of!(kvm_irq_routing_s390_adapter, summary_offset)),
            &r.summary_offset.to_ne_bytes(),
        );
        put(
            &mut t,
            f(offset_of!(kvm_irq_routing_s390_adapter, adapter_id)),
            &r.adapter_id.to_ne_bytes(),
        );
    }
    t
}

fn put(t: &mut [u8], off: usize, b: &[u8]) {
    t[off..off + b.len()].copy_from_slice(b);
}

/// The FLIC of a VM.
///
/// ```no_run
/// # fn demo(vm: &kvmkit_core::Vm<kvmkit_arch_s390x::S390x>) -> Result<(), Box<dyn std::error::Error>> {
/// use kvmkit_arch_s390x::{AdapterRoute, Flic};
/// use kvmkit_irq::InterruptController;
/// let flic = Flic::new(vm.arch_fd())?;
/// flic.register_adapter(0, 3, true)?; // adapter 0 on ISC 3
/// flic.set_adapter_route(1, AdapterRoute { adapter_id: 0, ind_addr: 0x9000, ..Default::default() })?;
/// flic.set_irq(1, true)?; // inject adapter 0's interrupt
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Flic {
    dev: File,
    vm: File,
    adapters: Mutex<BTreeMap<u32, u8>>,
    routes: Mutex<BTreeMap<u32, AdapterRoute>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn ioctl_err(ioctl: &'static str, irq: u32) -> impl FnOnce(std::io::Error) -> kvmkit_irq::Error {
    move |source| kvmkit_irq::Error::Ioctl { ioctl, irq, source }
}

fn unsupported(operation: &'static str) -> kvmkit_irq::Error {
    kvmkit_irq::Error::Unsupported {
        operation,
        controller: "FLIC",
    }
}

impl Flic {
    /// Creates the VM's FLIC (`KVM_CREATE_DEVICE` with `KVM_DEV_TYPE_FLIC`;
    /// KVM allows one per VM). The VM keeps a duplicate of the device fd,
    /// so that its snapshot (`SnapshotArch::save_vm_state`) reads the
    /// pending floating interruptions and a restore enqueues them again.
    pub fn new(vm: &S390Vm) -> crate::Result<Flic> {
        let dev = sys::create_device(vm.file(), KVM_DEV_TYPE_FLIC)
            .map_err(Error::ioctl("KVM_CREATE_DEVICE(KVM_DEV_TYPE_FLIC)"))?;
        let kept = dev
            .try_clone()
            .map_err(Error::ioctl("F_DUPFD_CLOEXEC of the FLIC fd"))?;
        let vm_file = vm
            .file()
            .try_clone()
            .map_err(Error::ioctl("F_DUPFD_CLOEXEC of the VM fd"))?;
        vm.set_flic(kept);
        Ok(Flic::from_files(dev, vm_file))
    }

    fn from_files(dev: File, vm: File) -> Flic {
        Flic {
            dev,
            vm,
            adapters: Mutex::default(),
            routes: Mutex::default(),
        }
    }

    fn enqueue(&self, irq: &kvm_s390_irq) -> std::io::Result<()> {
        sys::flic_enqueue(&self.dev, irq)
    }

    /// Registers I/O adapter `id` (below [`FLIC_ADAPTERS`]) on interruption
    /// subclass `isc` (0 to 7) (`KVM_DEV_FLIC_ADAPTER_REGISTER`); `maskable`
    /// lets the guest suppress it.
    pub fn register_adapter(&self, id: u32, isc: u8, maskable: bool) -> kvmkit_irq::Result<()> {
        check_range(id, FLIC_ADAPTERS)?;
        check_range(u32::from(isc), 8)?;
        let a = kvm_s390_io_adapter {
            id,
            isc,
            maskable: u8::from(maskable),
            swap: 0,
            flags: 0,
        };
        sys::flic_register_adapter(&self.dev, &a).map_err(ioctl_err(
            "KVM_SET_DEVICE_ATTR(KVM_DEV_FLIC_ADAPTER_REGISTER)",
            id,
        ))?;
        lock(&self.adapters).insert(id, isc);
        Ok(())
    }

    /// Routes `gsi` to an adapter (`KVM_SET_GSI_ROUTING` with the whole
    /// table). The adapter must be registered.
    pub fn set_adapter_route(&self, gsi: u32, route: AdapterRoute) -> kvmkit_irq::Result<()> {
        check_range(gsi, FLIC_GSIS)?;
        if !lock(&self.adapters).contains_key(&route.adapter_id) {
            return Err(unsupported("a route to an unregistered adapter"));
        }
        let mut routes = lock(&self.routes);
        let old = routes.insert(gsi, route);
        let table: Vec<(u32, AdapterRoute)> = routes.iter().map(|(&g, &r)| (g, r)).collect();
        if let Err(e) = sys::set_gsi_routing(&self.vm, &routing_table(&table)) {
            match old {
                Some(o) => routes.insert(gsi, o),
                None => routes.remove(&gsi),
            };
            return Err(ioctl_err("KVM_SET_GSI_ROUTING", gsi)(e));
        }
        Ok(())
    }

    /// Injects an I/O adapter interruption for `isc` (0 to 7) directly,
    /// without a route.
    pub fn inject_adapter_interrupt(&self, isc: u8) -> kvmkit_irq::Result<()> {
        check_range(u32::from(isc), 8)?;
        self.enqueue(&adapter_irq(isc)).map_err(ioctl_err(
            "KVM_SET_DEVICE_ATTR(KVM_DEV_FLIC_ENQUEUE)",
            u32::from(isc),
        ))
    }

    /// Drops every pending floating interruption (`KVM_DEV_FLIC_CLEAR_IRQS`),
    /// as a machine reset does.
    pub fn clear_irqs(&self) -> kvmkit_irq::Result<()> {
        sys::flic_clear_irqs(&self.dev)
            .map_err(ioctl_err("KVM_SET_DEVICE_ATTR(KVM_DEV_FLIC_CLEAR_IRQS)", 0))
    }

    fn route(&self, gsi: u32) -> kvmkit_irq::Result<AdapterRoute> {
        check_range(gsi, FLIC_GSIS)?;
        lock(&self.routes)
            .get(&gsi)
            .copied()
            .ok_or_else(|| unsupported("a GSI without an adapter route"))
    }
}

impl ServiceSignal for Flic {
    /// `KVM_DEV_FLIC_ENQUEUE` of a `KVM_S390_INT_SERVICE` interruption.
    fn raise_service_signal(&self, param: u32) -> std::io::Result<()> {
        self.enqueue(&service_irq(param))
    }
}

impl InterruptController for Flic {
    fn name(&self) -> &'static str {
        "FLIC"
    }

    fn irq_count(&self) -> u32 {
        FLIC_GSIS
    }

    fn set_irq(&self, irq: u32, level: bool) -> kvmkit_irq::Result<()> {
        let route = self.route(irq)?;
        if !level {
            return Ok(());
        }
        let isc = lock(&self.adapters)
            .get(&route.adapter_id)
            .copied()
            .ok_or_else(|| unsupported("raising an unregistered adapter"))?;
        self.enqueue(&adapter_irq(isc))
            .map_err(ioctl_err("KVM_SET_DEVICE_ATTR(KVM_DEV_FLIC_ENQUEUE)", irq))
    }

    fn signal_msi(&self, _msi: Msi) -> kvmkit_irq::Result<()> {
        Err(unsupported("MSI"))
    }

    fn register_irqfd(
        &self,
        fd: &EventFd,
        irq: u32,
        resample: Option<&EventFd>,
    ) -> kvmkit_irq::Result<()> {
        if resample.is_some() {
            return Err(unsupported("an irqfd with a resample fd"));
        }
        self.route(irq)?;
        let arg = kvm_irqfd {
            fd: u32::try_from(fd.as_raw_fd()).map_err(|_| unsupported("a negative fd"))?,
            gsi: irq,
            ..Default::default()
        };
        sys::irqfd(&self.vm, &arg).map_err(ioctl_err("KVM_IRQFD", irq))
    }

    fn unregister_irqfd(&self, fd: &EventFd, irq: u32) -> kvmkit_irq::Result<()> {
        check_range(irq, FLIC_GSIS)?;
        let arg = kvm_irqfd {
            fd: u32::try_from(fd.as_raw_fd()).map_err(|_| unsupported("a negative fd"))?,
            gsi: irq,
            flags: KVM_IRQFD_FLAG_DEASSIGN,
            ..Default::default()
        };
        sys::irqfd(&self.vm, &arg).map_err(ioctl_err("KVM_IRQFD(KVM_IRQFD_FLAG_DEASSIGN)", irq))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvmkit_irq::Error as IrqError;

    fn null_flic() -> Flic {
        let f = || File::open("/dev/null").unwrap();
        Flic::from_files(f(), f())
    }

    #[test]
    fn interrupt_records() {
        let a = adapter_irq(3);
        // SAFETY: `adapter_irq` fills the `io` member.
        let io = unsafe { a.u.io };
        assert_eq!(io.io_int_word, 0x9800_0000);
        let s = service_irq(0x3001);
        // SAFETY: `service_irq` fills the `ext` member.
        let ext = unsafe { s.u.ext };
        assert_eq!(ext.ext_params, 0x3001);
        assert_eq!(u64::from(KVM_S390_INT_SERVICE), s.type_);
    }

    #[test]
    fn routing_table_layout() {
        let r = AdapterRoute {
            adapter_id: 2,
            ind_addr: 0x9000,
            ind_offset: 17,
            summary_addr: 0xa000,
            summary_offset: 3,
        };
        let t = routing_table(&[(1, r), (7, AdapterRoute::default())]);
        assert_eq!(t.len(), 8 + 2 * 48);
        let u32_at = |o: usize| u32::from_ne_bytes(t[o..o + 4].try_into().unwrap());
        let u64_at = |o: usize| u64::from_ne_bytes(t[o..o + 8].try_into().unwrap());
        assert_eq!(u32_at(0), 2);
        assert_eq!(u32_at(8), 1); // gsi
        assert_eq!(u32_at(12), KVM_IRQ_ROUTING_S390_ADAPTER);
        assert_eq!(u64_at(24), 0x9000); // u.adapter.ind_addr
        assert_eq!(u64_at(32), 0xa000); // summary_addr
        assert_eq!(u64_at(40), 17); // ind_offset
        assert_eq!(u32_at(48), 3); // summary_offset
        assert_eq!(u32_at(52), 2); // adapter_id
        assert_eq!(u32_at(56), 7); // second entry's gsi
    }

    #[test]
    fn errors_name_the_operation_and_nothing_pretends() {
        let flic = null_flic();
        assert_eq!(flic.name(), "FLIC");
        assert_eq!(flic.irq_count(), 4096);
        // Unknown GSI, out of range GSI, MSI, resample.
        let e = flic.set_irq(1, true).unwrap_err();
        assert_eq!(
            e.to_string(),
            "a GSI without an adapter route is not supported by the FLIC interrupt controller"
        );
        assert!(matches!(
            flic.set_irq(4096, true),
            Err(IrqError::OutOfRange { irq: 4096, .. })
        ));
        assert!(matches!(
            flic.signal_msi(Msi::default()),
            Err(IrqError::Unsupported {
                operation: "MSI",
                ..
            })
        ));
        let fd = EventFd::new(0).unwrap();
        assert!(matches!(
            flic.register_irqfd(&fd, 1, Some(&fd)),
            Err(IrqError::Unsupported { .. })
        ));
        assert!(flic.register_irqfd(&fd, 1, None).is_err());
        // The kernel calls fail on a non-KVM fd, naming the ioctl.
        match flic.register_adapter(0, 3, true) {
            Err(IrqError::Ioctl { ioctl, irq: 0, .. }) => {
                assert_eq!(ioctl, "KVM_SET_DEVICE_ATTR(KVM_DEV_FLIC_ADAPTER_REGISTER)")
            }
            r => panic!("{r:?}"),
        }
        assert!(flic.register_adapter(64, 3, true).is_err());
        assert!(flic.register_adapter(0, 8, true).is_err());
        assert!(matches!(
            flic.set_adapter_route(0, AdapterRoute::default()),
            Err(IrqError::Unsupported { .. })
        ));
        assert!(matches!(
            flic.inject_adapter_interrupt(1),
            Err(IrqError::Ioctl { .. })
        ));
        assert!(flic.inject_adapter_interrupt(9).is_err());
        assert!(flic.clear_irqs().is_err());
        assert!(flic.raise_service_signal(0x3000).is_err());
        match flic.unregister_irqfd(&fd, 1) {
            Err(IrqError::Ioctl { ioctl, .. }) => {
                assert_eq!(ioctl, "KVM_IRQFD(KVM_IRQFD_FLAG_DEASSIGN)")
            }
            r => panic!("{r:?}"),
        }
        assert!(flic.unregister_irqfd(&fd, 5000).is_err());
    }

    #[test]
    fn routes_and_adapters_as_the_kernel_would_see_them() {
        // With a registered adapter (recorded directly: no KVM here), the
        // route's ioctl is issued and fails on /dev/null, leaving no route.
        let flic = null_flic();
        lock(&flic.adapters).insert(0, 3);
        let r = AdapterRoute {
            adapter_id: 0,
            ..Default::default()
        };
        assert!(matches!(
            flic.set_adapter_route(1, r),
            Err(IrqError::Ioctl {
                ioctl: "KVM_SET_GSI_ROUTING",
                irq: 1,
                ..
            })
        ));
        assert!(lock(&flic.routes).is_empty());
        // A route present: set_irq reaches the FLIC ioctl; lowering is a no-op.
        lock(&flic.routes).insert(1, r);
        assert!(flic.set_irq(1, false).is_ok());
        assert!(matches!(
            flic.set_irq(1, true),
            Err(IrqError::Ioctl {
                ioctl: "KVM_SET_DEVICE_ATTR(KVM_DEV_FLIC_ENQUEUE)",
                ..
            })
        ));
        let fd = EventFd::new(0).unwrap();
        assert!(matches!(
            flic.register_irqfd(&fd, 1, None),
            Err(IrqError::Ioctl {
                ioctl: "KVM_IRQFD",
                ..
            })
        ));
        // A route whose adapter disappeared.
        lock(&flic.adapters).clear();
        assert!(matches!(
            flic.set_irq(1, true),
            Err(IrqError::Unsupported { .. })
        ));
        // Replacing a route restores the old one when the kernel refuses.
        lock(&flic.adapters).insert(0, 3);
        let r2 = AdapterRoute {
            ind_addr: 0x1000,
            ..r
        };
        assert!(flic.set_adapter_route(1, r2).is_err());
        assert_eq!(lock(&flic.routes)[&1], r);
    }

    #[test]
    fn an_adapter_is_recorded_once_the_kernel_took_it() {
        use crate::sys::tests::with_ioctls_accepted;
        use crate::sys::{KVM_SET_DEVICE_ATTR, KVM_SET_GSI_ROUTING};
        let flic = null_flic();
        let route = AdapterRoute {
            adapter_id: 2,
            ind_addr: 0x9000,
            ..AdapterRoute::default()
        };
        // Refused by the kernel: not recorded, so no route can use it.
        assert!(flic.register_adapter(2, 5, true).is_err());
        assert!(matches!(
            flic.set_adapter_route(7, route),
            Err(IrqError::Unsupported { .. })
        ));
        // Accepted (KVM_DEV_FLIC_ADAPTER_REGISTER, then the routing table
        // and the injection): the route takes GSI 7 to the adapter.
        let accepted = [KVM_SET_DEVICE_ATTR, KVM_SET_GSI_ROUTING];
        with_ioctls_accepted(&accepted, || {
            flic.register_adapter(2, 5, true)?;
            flic.set_adapter_route(7, route)?;
            flic.set_irq(7, true)
        })
        .unwrap();
        assert_eq!(lock(&flic.adapters).get(&2), Some(&5));
        assert_eq!(lock(&flic.routes).get(&7), Some(&route));
        assert_eq!(flic.route(7).unwrap(), route);
    }
}
