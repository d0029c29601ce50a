//! The PC's default GSI routing for the in-kernel irqchip.

use crate::{Error, Result};
use kvm_bindings::{
    kvm_irq_routing_entry, kvm_irq_routing_entry__bindgen_ty_1, kvm_irq_routing_irqchip,
    KvmIrqRouting, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE,
    KVM_IRQ_ROUTING_IRQCHIP,
};

/// IOAPIC pins of the in-kernel IOAPIC.
pub const IOAPIC_PINS: u32 = 24;

fn irqchip(gsi: u32, chip: u32, pin: u32) -> kvm_irq_routing_entry {
    kvm_irq_routing_entry {
        gsi,
        type_: KVM_IRQ_ROUTING_IRQCHIP,
        u: kvm_irq_routing_entry__bindgen_ty_1 {
            irqchip: kvm_irq_routing_irqchip { irqchip: chip, pin },
        },
        ..Default::default()
    }
}

/// The routes a PC has: GSI 0–15 to the PICs and IOAPIC pins 0–15, except
/// that GSI 0 (the PIT) goes to IOAPIC pin 2 — what the MP table and the
/// MADT's interrupt source override say — and GSI 16–23 to IOAPIC pins 16–23.
///
/// ```
/// let r = kvmkit_arch_x86_64::pc_gsi_routes();
/// assert_eq!(r.len(), 15 * 2 + 8); // GSI 0-15 but 2 on PIC and IOAPIC, 16-23 on the IOAPIC
/// ```
pub fn pc_gsi_routes() -> Vec<kvm_irq_routing_entry> {
    let mut v = Vec::new();
    for gsi in 0..IOAPIC_PINS {
        if gsi < 16 && gsi != 2 {
            let (chip, pin) = if gsi < 8 {
                (KVM_IRQCHIP_PIC_MASTER, gsi)
            } else {
                (KVM_IRQCHIP_PIC_SLAVE, gsi - 8)
            };
            v.push(irqchip(gsi, chip, pin));
        }
        if gsi != 2 {
            v.push(irqchip(
                gsi,
                KVM_IRQCHIP_IOAPIC,
                if gsi == 0 { 2 } else { gsi },
            ));
        }
    }
    v
}

/// Installs [`pc_gsi_routes`] with `KVM_SET_GSI_ROUTING`.
pub(crate) fn set_pc_routing(vm: &kvm_ioctls::VmFd) -> Result<()> {
    let routes = pc_gsi_routes();
    let table = KvmIrqRouting::from_entries(&routes).map_err(|e| Error::FamList {
        what: "GSI routing",
        detail: format!("{e:?}"),
    })?;
    vm.set_gsi_routing(&table)
        .map_err(Error::ioctl("KVM_SET_GSI_ROUTING"))
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
}
