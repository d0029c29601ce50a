//! Typed KVM capabilities.

use std::fmt;

/// A KVM capability: its number and the kernel's macro name.
///
/// The numbers are those of the generic `linux/kvm.h` and are the same on every
/// architecture; arch crates pin them against their UAPI headers. Errors about
/// a missing capability name it by [`Capability::name`].
///
/// ```
/// use kvmkit_core::Capability;
/// assert_eq!(Capability::IRQFD.number(), 32);
/// assert_eq!(Capability::IRQFD.to_string(), "KVM_CAP_IRQFD");
/// let custom = Capability::new(92, "KVM_CAP_IRQ_XICS");
/// assert_eq!(custom.number(), 92);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Capability {
    number: u32,
    name: &'static str,
}

macro_rules! caps {
    ($($id:ident = $num:literal, $name:literal;)*) => {
        impl Capability {
            $(
                #[doc = concat!("`", $name, "`")]
                pub const $id: Capability = Capability::new($num, $name);
            )*
            /// Every capability this crate names, for listings and header checks.
            pub const ALL: &'static [Capability] = &[$(Capability::$id),*];
        }
    };
}

caps! {
    IRQCHIP = 0, "KVM_CAP_IRQCHIP";
    HLT = 1, "KVM_CAP_HLT";
    USER_MEMORY = 3, "KVM_CAP_USER_MEMORY";
    SET_TSS_ADDR = 4, "KVM_CAP_SET_TSS_ADDR";
    EXT_CPUID = 7, "KVM_CAP_EXT_CPUID";
    NR_VCPUS = 9, "KVM_CAP_NR_VCPUS";
    NR_MEMSLOTS = 10, "KVM_CAP_NR_MEMSLOTS";
    PIT = 11, "KVM_CAP_PIT";
    MP_STATE = 14, "KVM_CAP_MP_STATE";
    COALESCED_MMIO = 15, "KVM_CAP_COALESCED_MMIO";
    SYNC_MMU = 16, "KVM_CAP_SYNC_MMU";
    USER_NMI = 22, "KVM_CAP_USER_NMI";
    SET_GUEST_DEBUG = 23, "KVM_CAP_SET_GUEST_DEBUG";
    IRQ_ROUTING = 25, "KVM_CAP_IRQ_ROUTING";
    IRQ_INJECT_STATUS = 26, "KVM_CAP_IRQ_INJECT_STATUS";
    IRQFD = 32, "KVM_CAP_IRQFD";
    PIT2 = 33, "KVM_CAP_PIT2";
    IOEVENTFD = 36, "KVM_CAP_IOEVENTFD";
    SET_IDENTITY_MAP_ADDR = 37, "KVM_CAP_SET_IDENTITY_MAP_ADDR";
    ADJUST_CLOCK = 39, "KVM_CAP_ADJUST_CLOCK";
    INTERNAL_ERROR_DATA = 40, "KVM_CAP_INTERNAL_ERROR_DATA";
    VCPU_EVENTS = 41, "KVM_CAP_VCPU_EVENTS";
    S390_PSW = 42, "KVM_CAP_S390_PSW";
    DEBUGREGS = 50, "KVM_CAP_DEBUGREGS";
    ENABLE_CAP = 54, "KVM_CAP_ENABLE_CAP";
    XSAVE = 55, "KVM_CAP_XSAVE";
    XCRS = 56, "KVM_CAP_XCRS";
    TSC_CONTROL = 60, "KVM_CAP_TSC_CONTROL";
    GET_TSC_KHZ = 61, "KVM_CAP_GET_TSC_KHZ";
    MAX_VCPUS = 66, "KVM_CAP_MAX_VCPUS";
    PPC_PAPR = 68, "KVM_CAP_PPC_PAPR";
    ONE_REG = 70, "KVM_CAP_ONE_REG";
    TSC_DEADLINE_TIMER = 72, "KVM_CAP_TSC_DEADLINE_TIMER";
    SYNC_REGS = 74, "KVM_CAP_SYNC_REGS";
    KVMCLOCK_CTRL = 76, "KVM_CAP_KVMCLOCK_CTRL";
    SIGNAL_MSI = 77, "KVM_CAP_SIGNAL_MSI";
    READONLY_MEM = 81, "KVM_CAP_READONLY_MEM";
    IRQFD_RESAMPLE = 82, "KVM_CAP_IRQFD_RESAMPLE";
    DEVICE_CTRL = 89, "KVM_CAP_DEVICE_CTRL";
    IRQ_XICS = 92, "KVM_CAP_IRQ_XICS";
    ENABLE_CAP_VM = 98, "KVM_CAP_ENABLE_CAP_VM";
    S390_IRQCHIP = 99, "KVM_CAP_S390_IRQCHIP";
    CHECK_EXTENSION_VM = 105, "KVM_CAP_CHECK_EXTENSION_VM";
    MULTI_ADDRESS_SPACE = 118, "KVM_CAP_MULTI_ADDRESS_SPACE";
    GUEST_DEBUG_HW_BPS = 119, "KVM_CAP_GUEST_DEBUG_HW_BPS";
    SPLIT_IRQCHIP = 121, "KVM_CAP_SPLIT_IRQCHIP";
    MAX_VCPU_ID = 128, "KVM_CAP_MAX_VCPU_ID";
    X2APIC_API = 129, "KVM_CAP_X2APIC_API";
    IMMEDIATE_EXIT = 136, "KVM_CAP_IMMEDIATE_EXIT";
    MANUAL_DIRTY_LOG_PROTECT2 = 168, "KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2";
    PPC_IRQ_XIVE = 169, "KVM_CAP_PPC_IRQ_XIVE";
    DIRTY_LOG_RING = 192, "KVM_CAP_DIRTY_LOG_RING";
    SET_GUEST_DEBUG2 = 195, "KVM_CAP_SET_GUEST_DEBUG2";
    SREGS2 = 200, "KVM_CAP_SREGS2";
    XSAVE2 = 208, "KVM_CAP_XSAVE2";
    X86_TRIPLE_FAULT_EVENT = 218, "KVM_CAP_X86_TRIPLE_FAULT_EVENT";
    DIRTY_LOG_RING_ACQ_REL = 223, "KVM_CAP_DIRTY_LOG_RING_ACQ_REL";
}

impl Capability {
    /// A capability this crate does not name yet, e.g. an arch-only one.
    pub const fn new(number: u32, name: &'static str) -> Self {
        Capability { number, name }
    }

    /// The capability number passed to `KVM_CHECK_EXTENSION`.
    pub const fn number(self) -> u32 {
        self.number
    }

    /// The kernel's macro name, e.g. `KVM_CAP_IRQFD`.
    pub const fn name(self) -> &'static str {
        self.name
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

/// A capability with a `KVM_CHECK_EXTENSION` value, as an ABI profile lists
/// it: in a host's profile the host's value, in the profile of a saved state
/// the least value the state needs (1: present).
///
/// ```
/// use kvmkit_core::{Capability, CapabilityValue};
/// let c = CapabilityValue::new(Capability::XCRS, 1);
/// assert_eq!(c.to_string(), "KVM_CAP_XCRS (56) = 1");
/// let host = [CapabilityValue::new(Capability::ONE_REG, 1)];
/// assert_eq!(CapabilityValue::value_in(&host, Capability::ONE_REG.number()), 1);
/// assert_eq!(CapabilityValue::value_in(&host, 56), 0);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CapabilityValue {
    /// The kernel's name, e.g. `KVM_CAP_XSAVE2`.
    pub name: String,
    /// Its number.
    pub number: u32,
    /// The value (0: absent).
    pub value: i32,
}

impl CapabilityValue {
    /// `cap` with `value`.
    pub fn new(cap: Capability, value: i32) -> Self {
        CapabilityValue {
            name: cap.name().to_string(),
            number: cap.number(),
            value,
        }
    }

    /// What a saved state's profile lists: each capability of `order` that
    /// `needed` picks, at value 1 (present), in `order`'s order (so the
    /// output is stable however the state was walked).
    ///
    /// ```
    /// use kvmkit_core::{Capability, CapabilityValue};
    /// let order = [Capability::ONE_REG, Capability::SYNC_REGS, Capability::S390_PSW];
    /// let caps = CapabilityValue::needed(&order, |c| *c != Capability::SYNC_REGS);
    /// let names: Vec<&str> = caps.iter().map(|c| c.name.as_str()).collect();
    /// assert_eq!(names, ["KVM_CAP_ONE_REG", "KVM_CAP_S390_PSW"]);
    /// assert!(caps.iter().all(|c| c.value == 1));
    /// ```
    pub fn needed(order: &[Capability], needed: impl Fn(&Capability) -> bool) -> Vec<Self> {
        order
            .iter()
            .filter(|c| needed(c))
            .map(|&c| CapabilityValue::new(c, 1))
            .collect()
    }

    /// The value of capability `number` in `list`, 0 when it is not there.
    pub fn value_in(list: &[CapabilityValue], number: u32) -> i32 {
        list.iter()
            .find(|c| c.number == number)
            .map_or(0, |c| c.value)
    }
}

impl fmt::Display for CapabilityValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}) = {}", self.name, self.number, self.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn capability_values_name_their_capability() {
        let c = CapabilityValue::new(Capability::S390_IRQCHIP, 1);
        assert_eq!(c.name, "KVM_CAP_S390_IRQCHIP");
        assert_eq!(c.number, 99);
        let list = vec![c, CapabilityValue::new(Capability::XSAVE2, 4096)];
        assert_eq!(CapabilityValue::value_in(&list, 208), 4096);
        assert_eq!(CapabilityValue::value_in(&[], 208), 0);
    }

    #[test]
    fn capabilities_display_as_the_kernel_names_them() {
        assert_eq!(Capability::IRQFD.to_string(), "KVM_CAP_IRQFD");
        // An arch-only capability this crate does not list.
        let c = Capability::new(186, "KVM_CAP_PPC_NESTED_HV");
        assert_eq!((c.number(), c.name()), (186, "KVM_CAP_PPC_NESTED_HV"));
        assert_eq!(c.to_string(), "KVM_CAP_PPC_NESTED_HV");
        assert!(!Capability::ALL.contains(&c));
        let v = CapabilityValue::new(c, 2);
        assert_eq!(v.to_string(), "KVM_CAP_PPC_NESTED_HV (186) = 2");
        assert_eq!(CapabilityValue::value_in(&[v], 186), 2);
    }

    #[test]
    fn numbers_and_names_are_unique() {
        let nums: HashSet<u32> = Capability::ALL.iter().map(|c| c.number()).collect();
        let names: HashSet<&str> = Capability::ALL.iter().map(|c| c.name()).collect();
        assert_eq!(nums.len(), Capability::ALL.len());
        assert_eq!(names.len(), Capability::ALL.len());
        assert!(Capability::ALL
            .iter()
            .all(|c| c.name().starts_with("KVM_CAP_")));
    }
}
