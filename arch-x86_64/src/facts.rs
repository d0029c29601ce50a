//! Every UAPI fact this crate relies on, by the kernel's names.

use crate::exit::{EXIT_REASONS, FIELDS};
use crate::ioctl_numbers;
use kvm_bindings as kb;
use kvmkit_core::Capability;
use std::collections::BTreeMap;
use std::mem::{align_of, offset_of, size_of};

macro_rules! layout {
    ($m:ident, $ty:ident { $($field:ident : $fty:ty),* $(,)? }) => {{
        $m.insert(concat!(stringify!($ty), ".size").to_string(), size_of::<kb::$ty>() as u64);
        $m.insert(concat!(stringify!($ty), ".align").to_string(), align_of::<kb::$ty>() as u64);
        $(
            $m.insert(
                concat!(stringify!($ty), ".", stringify!($field), ".offset").to_string(),
                offset_of!(kb::$ty, $field) as u64,
            );
            $m.insert(
                concat!(stringify!($ty), ".", stringify!($field), ".size").to_string(),
                size_of::<$fty>() as u64,
            );
        )*
    }};
}

/// The UAPI facts of x86_64 this crate relies on: ioctl numbers (x86
/// encoding), `KVM_EXIT_*` and `KVM_CAP_*` values, the sizes, alignments and
/// field offsets of the kvm-bindings structs it passes to the kernel, and the
/// `kvm_run` fields its exit decoder reads (`kvm_run.MEMBER.FIELD.offset`,
/// from the start of `kvm_run`). The `uapi_facts` example prints them as
/// JSON; `tests/uapi.rs` checks each against the real headers.
///
/// ```
/// let f = kvmkit_arch_x86_64::uapi_facts();
/// assert_eq!(f["KVM_RUN"], 44672);
/// assert_eq!(f["kvm_run.io.port.offset"], 34);
/// ```
pub fn uapi_facts() -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for (name, n) in ioctl_numbers() {
        m.insert(name.to_string(), n);
    }
    for (name, n) in EXIT_REASONS {
        m.insert(name.to_string(), u64::from(*n));
    }
    for c in Capability::ALL {
        m.insert(c.name().to_string(), u64::from(c.number()));
    }
    crate::sys::dirty_log_facts(&mut m);
    for (field, off, size) in FIELDS {
        m.insert(format!("kvm_run.{field}.offset"), *off as u64);
        m.insert(format!("kvm_run.{field}.size"), *size as u64);
    }
    layout!(
        m,
        kvm_regs {
            rax: u64,
            rbx: u64,
            rsi: u64,
            rsp: u64,
            rip: u64,
            rflags: u64,
            r15: u64
        }
    );
    layout!(
        m,
        kvm_segment {
            base: u64,
            limit: u32,
            selector: u16,
            type_: u8,
            present: u8,
            dpl: u8,
            db: u8,
            s: u8,
            l: u8,
            g: u8,
            avl: u8,
            unusable: u8
        }
    );
    layout!(
        m,
        kvm_dtable {
            base: u64,
            limit: u16
        }
    );
    layout!(
        m,
        kvm_sregs {
            cs: kb::kvm_segment,
            tr: kb::kvm_segment,
            gdt: kb::kvm_dtable,
            idt: kb::kvm_dtable,
            cr0: u64,
            cr3: u64,
            cr4: u64,
            efer: u64,
            apic_base: u64,
            interrupt_bitmap: [u64; 4]
        }
    );
    layout!(
        m,
        kvm_fpu {
            fpr: [[u8; 16]; 8],
            fcw: u16,
            mxcsr: u32
        }
    );
    layout!(
        m,
        kvm_userspace_memory_region {
            slot: u32,
            flags: u32,
            guest_phys_addr: u64,
            memory_size: u64,
            userspace_addr: u64
        }
    );
    layout!(m, kvm_one_reg { id: u64, addr: u64 });
    layout!(
        m,
        kvm_msr_entry {
            index: u32,
            data: u64
        }
    );
    layout!(
        m,
        kvm_cpuid_entry2 {
            function: u32,
            index: u32,
            flags: u32,
            eax: u32,
            ebx: u32,
            ecx: u32,
            edx: u32
        }
    );
    layout!(m, kvm_lapic_state { regs: [u8; 1024] });
    layout!(m, kvm_mp_state { mp_state: u32 });
    layout!(
        m,
        kvm_guest_debug {
            control: u32,
            arch: kb::kvm_guest_debug_arch
        }
    );
    layout!(m, kvm_guest_debug_arch { debugreg: [u64; 8] });
    layout!(
        m,
        kvm_irq_routing_entry {
            gsi: u32,
            type_: u32,
            flags: u32
        }
    );
    layout!(
        m,
        kvm_enable_cap {
            cap: u32,
            flags: u32,
            args: [u64; 4]
        }
    );
    // Saved state (`X86VcpuState`, `X86VmState`) and the ABI profile.
    layout!(
        m,
        kvm_xcrs {
            nr_xcrs: u32,
            flags: u32,
            xcrs: [kb::kvm_xcr; 16]
        }
    );
    layout!(
        m,
        kvm_xsave {
            region: [u32; 1024]
        }
    );
    layout!(
        m,
        kvm_debugregs {
            db: [u64; 4],
            dr6: u64,
            dr7: u64
        }
    );
    layout!(
        m,
        kvm_vcpu_events {
            exception: kb::kvm_vcpu_events__bindgen_ty_1,
            flags: u32
        }
    );
    layout!(
        m,
        kvm_clock_data {
            clock: u64,
            flags: u32,
            realtime: u64,
            host_tsc: u64
        }
    );
    layout!(
        m,
        kvm_pit_state2 {
            channels: [kb::kvm_pit_channel_state; 3],
            flags: u32
        }
    );
    layout!(
        m,
        kvm_irqchip {
            chip_id: u32,
            chip: kb::kvm_irqchip__bindgen_ty_1
        }
    );
    for (name, v) in [
        ("KVM_CLOCK_TSC_STABLE", kb::KVM_CLOCK_TSC_STABLE),
        ("KVM_CLOCK_REALTIME", kb::KVM_CLOCK_REALTIME),
        ("KVM_CLOCK_HOST_TSC", kb::KVM_CLOCK_HOST_TSC),
        ("KVM_IRQCHIP_PIC_MASTER", kb::KVM_IRQCHIP_PIC_MASTER),
        ("KVM_IRQCHIP_PIC_SLAVE", kb::KVM_IRQCHIP_PIC_SLAVE),
        ("KVM_IRQCHIP_IOAPIC", kb::KVM_IRQCHIP_IOAPIC),
        (
            "KVM_CPUID_FLAG_SIGNIFCANT_INDEX",
            kb::KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
        ),
        (
            crate::host::CAP_PIT_STATE2.name(),
            crate::host::CAP_PIT_STATE2.number(),
        ),
        (
            crate::host::CAP_GET_MSR_FEATURES.name(),
            crate::host::CAP_GET_MSR_FEATURES.number(),
        ),
    ] {
        m.insert(name.to_string(), u64::from(v));
    }
    m.insert("kvm_run.size".into(), size_of::<kb::kvm_run>() as u64);
    // bindgen spells the C member `type` as `type_`; facts use the kernel's names.
    m.into_iter()
        .map(|(k, v)| (k.replace(".type_.", ".type."), v))
        .collect()
}
