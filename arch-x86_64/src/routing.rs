//! GSI routing on x86: the PC's default table for the in-kernel irqchip and
//! `KVM_SET_GSI_ROUTING` for any [`RoutingTable`].

use crate::X86Vm;
use kvm_bindings::{
    kvm_irq_routing_entry, kvm_irq_routing_entry__bindgen_ty_1, kvm_irq_routing_irqchip,
    kvm_irq_routing_msi, kvm_irq_routing_msi__bindgen_ty_1, KvmIrqRouting, KVM_IRQCHIP_IOAPIC,
    KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE, KVM_IRQ_ROUTING_IRQCHIP, KVM_IRQ_ROUTING_MSI,
    KVM_MSI_VALID_DEVID,
};
use kvmkit_irq::{Error, GsiRouting, Msi, Result, RouteEntry, RouteTarget, RoutingTable};

/// IOAPIC pins of the in-kernel IOAPIC.
pub const IOAPIC_PINS: u32 = 24;

/// The routes a PC has: GSI 0–15 to the PICs and IOAPIC pins 0–15, except
/// that GSI 0 (the PIT) goes to IOAPIC pin 2 — what the MP table and the
/// MADT's interrupt source override say — and GSI 16–23 to IOAPIC pins 16–23.
/// GSI 2 (the PIC cascade) has no route. Chips are KVM's numbers:
/// `KVM_IRQCHIP_PIC_MASTER` (0), `KVM_IRQCHIP_PIC_SLAVE` (1),
/// `KVM_IRQCHIP_IOAPIC` (2).
///
/// The in-kernel irqchip installs it; a VMM adding MSI routes for GSIs 24
/// and up starts from it and calls [`GsiRouting::set_routing`].
///
/// ```
/// use kvmkit_irq::{RouteEntry, RouteTarget};
/// let t = kvmkit_arch_x86_64::pc_routing_table();
/// assert_eq!(t.len(), 15 * 2 + 8);
/// assert!(t.routes(0).any(|e| e.target == RouteTarget::Irqchip { chip: 2, pin: 2 }));
/// assert_eq!(t.routes(2).count(), 0);
/// ```
pub fn pc_routing_table() -> RoutingTable {
    let mut t = RoutingTable::new();
    let mut add = |e: RouteEntry| {
        // The PC's routes are distinct per GSI and chip and below the limit.
        t.add(e).expect("the PC routing table is valid");
    };
    for gsi in 0..IOAPIC_PINS {
        if gsi == 2 {
            continue;
        }
        if gsi < 16 {
            let (chip, pin) = if gsi < 8 {
                (KVM_IRQCHIP_PIC_MASTER, gsi)
            } else {
                (KVM_IRQCHIP_PIC_SLAVE, gsi - 8)
            };
            add(RouteEntry::irqchip(gsi, chip, pin));
        }
        let pin = if gsi == 0 { 2 } else { gsi };
        add(RouteEntry::irqchip(gsi, KVM_IRQCHIP_IOAPIC, pin));
    }
    t
}

/// [`pc_routing_table`] as kvm-bindings entries.
///
/// ```
/// let r = kvmkit_arch_x86_64::pc_gsi_routes();
/// assert_eq!(r.len(), 15 * 2 + 8); // GSI 0-15 but 2 on PIC and IOAPIC, 16-23 on the IOAPIC
/// ```
pub fn pc_gsi_routes() -> Vec<kvm_irq_routing_entry> {
    let t = pc_routing_table();
    t.iter()
        .map(|e| kvm_route(e).expect("PC routes are irqchip routes"))
        .collect()
}

fn unsupported() -> Error {
    Error::Unsupported {
        operation: "this kind of GSI route",
        controller: "x86 KVM",
    }
}

/// One entry in `KVM_SET_GSI_ROUTING`'s encoding.
pub(crate) fn kvm_route(e: &RouteEntry) -> Result<kvm_irq_routing_entry> {
    let (type_, flags, u) = match e.target {
        RouteTarget::Irqchip { chip, pin } => (
            KVM_IRQ_ROUTING_IRQCHIP,
            0,
            kvm_irq_routing_entry__bindgen_ty_1 {
                irqchip: kvm_irq_routing_irqchip { irqchip: chip, pin },
            },
        ),
        RouteTarget::Msi(Msi {
            address,
            data,
            devid,
        }) => (
            KVM_IRQ_ROUTING_MSI,
            if devid.is_some() {
                KVM_MSI_VALID_DEVID
            } else {
                0
            },
            kvm_irq_routing_entry__bindgen_ty_1 {
                msi: kvm_irq_routing_msi {
                    address_lo: (address & 0xffff_ffff) as u32,
                    address_hi: (address >> 32) as u32,
                    data,
                    __bindgen_anon_1: kvm_irq_routing_msi__bindgen_ty_1 {
                        devid: devid.unwrap_or(0),
                    },
                },
            },
        ),
        _ => return Err(unsupported()),
    };
    Ok(kvm_irq_routing_entry {
        gsi: e.gsi,
        type_,
        flags,
        u,
        ..Default::default()
    })
}

/// `table` as the argument of `KVM_SET_GSI_ROUTING`.
pub(crate) fn kvm_routing(table: &RoutingTable) -> Result<KvmIrqRouting> {
    let entries = table.iter().map(kvm_route).collect::<Result<Vec<_>>>()?;
    KvmIrqRouting::from_entries(&entries).map_err(|e| Error::SetRouting {
        ioctl: "KVM_SET_GSI_ROUTING",
        entries: entries.len(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{e:?}")),
    })
}

/// GSI routing of an x86 VM: with the in-kernel irqchip (routes to the PICs,
/// the IOAPIC, MSIs) and with the split irqchip (MSI routes only, which the
/// userspace IOAPIC maintains; see [`crate::SplitIrqchip`]).
impl GsiRouting for X86Vm {
    /// Wraps `KVM_SET_GSI_ROUTING`, replacing the VM's whole table.
    fn set_routing(&self, table: &RoutingTable) -> Result<()> {
        let routing = kvm_routing(table)?;
        self.vm_fd()
            .set_gsi_routing(&routing)
            .map_err(|e| Error::SetRouting {
                ioctl: "KVM_SET_GSI_ROUTING",
                entries: table.len(),
                source: std::io::Error::from_raw_os_error(e.errno()),
            })
    }
}

/// Installs [`pc_routing_table`] with `KVM_SET_GSI_ROUTING` (in `init_vm`).
pub(crate) fn set_pc_routing(vm: &kvm_ioctls::VmFd) -> crate::Result<()> {
    let routing = kvm_routing(&pc_routing_table()).map_err(|e| crate::Error::FamList {
        what: "GSI routing",
        detail: e.to_string(),
    })?;
    vm.set_gsi_routing(&routing)
        .map_err(crate::Error::ioctl("KVM_SET_GSI_ROUTING"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pit_goes_to_pin_2() {
        let r = pc_gsi_routes();
        let pins: Vec<(u32, u32, u32)> = r
            .iter()
            .map(|e| {
                assert_eq!(e.type_, KVM_IRQ_ROUTING_IRQCHIP);
                // SAFETY: the entry is of type IRQCHIP (checked above), so
                // `irqchip` is the union's live field.
                let chip = unsafe { e.u.irqchip };
                (e.gsi, chip.irqchip, chip.pin)
            })
            .collect();
        assert!(pins.contains(&(0, KVM_IRQCHIP_IOAPIC, 2)));
        assert!(pins.contains(&(0, KVM_IRQCHIP_PIC_MASTER, 0)));
        assert!(pins.contains(&(9, KVM_IRQCHIP_IOAPIC, 9)));
        assert!(pins.contains(&(9, KVM_IRQCHIP_PIC_SLAVE, 1)));
        assert!(!pins.iter().any(|p| p.0 == 2));
        assert!(pins.contains(&(23, KVM_IRQCHIP_IOAPIC, 23)));
    }

    #[test]
    fn msi_routes_encode_address_data_and_devid() {
        let e = kvm_route(&RouteEntry::msi(
            30,
            Msi {
                address: 0x1_fee0_1000,
                data: 0x80b1,
                devid: Some(0x18),
            },
        ))
        .unwrap();
        assert_eq!(
            (e.gsi, e.type_, e.flags),
            (30, KVM_IRQ_ROUTING_MSI, KVM_MSI_VALID_DEVID)
        );
        // SAFETY: the entry is of type MSI (checked above), so `msi` is the
        // union's live field.
        let m = unsafe { e.u.msi };
        assert_eq!(
            (m.address_lo, m.address_hi, m.data),
            (0xfee0_1000, 1, 0x80b1)
        );
        // SAFETY: `devid` and `pad` are both plain u32s of the union.
        assert_eq!(unsafe { m.__bindgen_anon_1.devid }, 0x18);
        let e = kvm_route(&RouteEntry::msi(31, Msi::default())).unwrap();
        assert_eq!(e.flags, 0);
        let mut t = pc_routing_table();
        t.add(RouteEntry::msi(24, Msi::default())).unwrap();
        assert_eq!(kvm_routing(&t).unwrap().as_slice().len(), 39);
    }
}
