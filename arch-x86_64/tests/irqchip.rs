//! Interrupts end to end on real KVM, with the in-kernel irqchip and with the
//! split irqchip (userspace IOAPIC): a tiny long-mode guest enables its LAPIC,
//! programs an IOAPIC redirection entry through MMIO, then waits in
//! `sti; hlt`; the host raises the line (`set_irq`, an irqfd) or sends an MSI,
//! and the guest's handler reports the vector with `out` and EOIs.

// Guest addresses and vectors here are small constants that fit every narrower type.
#![allow(clippy::cast_possible_truncation)]

mod common;

use kvmkit_arch_x86_64::{
    BootSetup, EoiHandler, GdtLayout, IrqchipMode, PortIoBus, SplitIrqchip, VcpuConfig, VmConfig,
    X86Io, X86Vm, IOAPIC_ADDR, IOAPIC_SIZE, X86_64,
};
use kvmkit_core::{Arch, ArchExitOutcome, Capability};
use kvmkit_core::{Kvm, VcpuExit, VcpuId, Vm};
use kvmkit_irq::{InterruptController, Msi};
use kvmkit_test_support::kvm_or_skip;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;
use vm_device::bus::{MmioAddress, PioAddress, PioAddressOffset};
use vm_device::{DeviceMmio, MutDevicePio};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

const CODE: u64 = 0x10000;
const HANDLERS: u64 = CODE + 0x100;
const IDT: u64 = 0x11000;
/// The vector the IOAPIC pin is programmed with.
const PIN_VECTOR: u8 = 0x41;
/// The vector of the MSIs sent directly.
const MSI_VECTOR: u8 = 0x51;
/// The pin (and GSI) used.
const PIN: u32 = 5;
const READY: u8 = 0xaa;
const WAIT: Duration = Duration::from_secs(20);

/// `mov dword [base + disp], value` with `modrm` naming the base register
/// (`rbx` or `rcx`, disp32 or disp8 forms).
fn mov_mem32(code: &mut Vec<u8>, modrm_and_disp: &[u8], value: u32) {
    code.push(0xc7);
    code.extend(modrm_and_disp);
    code.extend(value.to_le_bytes());
}

/// The guest, 64-bit long mode (KVM's emulator lacks protected-mode `iret`):
/// ```text
///     mov ebx, 0xfee00000                  ; LAPIC
///     mov ecx, 0xfec00000                  ; IOAPIC
///     mov dword [rbx + 0xf0], 0x1ff        ; SVR: software-enable
///     mov dword [rbx + 0x350], 0x10000     ; LVT LINT0 masked (no PIC)
///     mov dword [rcx], 0x11 + 2*pin        ; IOREGSEL: entry high
///     mov dword [rcx + 0x10], 0            ; IOWIN: destination APIC 0
///     mov dword [rcx], 0x10 + 2*pin        ; IOREGSEL: entry low
///     mov dword [rcx + 0x10], low          ; IOWIN: vector, trigger, unmasked
///     mov al, 0xaa
///     out 0x80, al                         ; ready
/// l:  sti
///     hlt
///     jmp l
/// ```
/// and at `HANDLERS + 0x20 * i` a handler for vector `v`:
/// ```text
///     mov al, v
///     out 0x81, al
///     mov dword [rbx + 0xb0], 0            ; LAPIC EOI
///     iretq
/// ```
fn guest_code(low: u32) -> (Vec<u8>, Vec<u8>) {
    let mut c = vec![0xbb];
    c.extend(0xfee0_0000u32.to_le_bytes());
    c.push(0xb9);
    c.extend((IOAPIC_ADDR as u32).to_le_bytes());
    mov_mem32(&mut c, &[0x83, 0xf0, 0, 0, 0], 0x1ff);
    mov_mem32(&mut c, &[0x83, 0x50, 0x03, 0, 0], 0x1_0000);
    mov_mem32(&mut c, &[0x01], 0x11 + 2 * PIN);
    mov_mem32(&mut c, &[0x41, 0x10], 0);
    mov_mem32(&mut c, &[0x01], 0x10 + 2 * PIN);
    mov_mem32(&mut c, &[0x41, 0x10], low);
    c.extend([0xb0, READY, 0xe6, 0x80, 0xfb, 0xf4, 0xeb, 0xfc]);
    let mut h = Vec::new();
    for v in [PIN_VECTOR, MSI_VECTOR] {
        let mut one = vec![0xb0, v, 0xe6, 0x81];
        mov_mem32(&mut one, &[0x83, 0xb0, 0, 0, 0], 0);
        one.extend([0x48, 0xcf]);
        one.resize(0x20, 0x90);
        h.extend(one);
    }
    (c, h)
}

/// A 64-bit interrupt gate to `handler` in the boot GDT's 64-bit code segment.
fn gate(handler: u64) -> [u8; 16] {
    let low = (handler & 0xffff)
        | u64::from(GdtLayout::CODE64) << 16
        | 0x8e00 << 32
        | ((handler >> 16) & 0xffff) << 48;
    let mut g = [0u8; 16];
    g[..8].copy_from_slice(&low.to_le_bytes());
    g[8..12].copy_from_slice(&((handler >> 32) as u32).to_le_bytes());
    g
}

/// Records `out` to ports 0x80 and 0x81.
struct Reports(Mutex<Sender<(u16, u8)>>);

impl MutDevicePio for Reports {
    fn pio_read(&mut self, _: PioAddress, _: PioAddressOffset, data: &mut [u8]) {
        data.fill(0);
    }
    fn pio_write(&mut self, base: PioAddress, offset: PioAddressOffset, data: &[u8]) {
        // The receiver may be gone when the test has finished.
        let _ = self.0.lock().unwrap().send((base.0 + offset, data[0]));
    }
}

/// Counts the EOIs the IOAPIC got, and passes them on.
struct CountingEoi<H>(H, Arc<AtomicUsize>);

impl<H: EoiHandler> EoiHandler for CountingEoi<H> {
    fn end_of_interrupt(&self, vector: u8) {
        self.1.fetch_add(1, Ordering::SeqCst);
        self.0.end_of_interrupt(vector);
    }
}

struct Machine {
    vm: Arc<Vm<X86_64>>,
    /// The split irqchip, in split mode.
    chip: Option<Arc<SplitIrqchip<X86Vm>>>,
    /// How many `KVM_EXIT_IOAPIC_EOI` reached the chip.
    eois: Arc<AtomicUsize>,
    _mem: GuestMemoryMmap,
    reports: Receiver<(u16, u8)>,
    stop: Arc<AtomicBool>,
    kicker: kvmkit_core::Kicker,
    thread: Option<JoinHandle<String>>,
}

impl Machine {
    /// Boots the guest with `irqchip`, its IOAPIC entry for `PIN` being `low`.
    fn start(kvm: &Kvm<X86_64>, irqchip: IrqchipMode, low: u32) -> Machine {
        let (code, handlers) = guest_code(low);
        let mut idt = vec![0u8; 0x1000];
        for (i, v) in [PIN_VECTOR, MSI_VECTOR].into_iter().enumerate() {
            let at = usize::from(v) * 16;
            idt[at..at + 16].copy_from_slice(&gate(HANDLERS + 0x20 * i as u64));
        }
        let mem = common::memory(
            0x20000,
            &[(CODE, &code), (HANDLERS, &handlers), (IDT, &idt)],
        );
        let vm = Arc::new(
            kvm.create_vm(&VmConfig {
                irqchip,
                ..Default::default()
            })
            .unwrap(),
        );
        // SAFETY: `mem` lives in `Machine` next to the VM, and the vCPU
        // thread is joined before `Machine` is dropped.
        unsafe { common::add_slot(&vm, &mem) };
        let mut vcpu = vm.create_vcpu(VcpuId(0), &VcpuConfig::default()).unwrap();
        vcpu.setup_boot(
            &mem,
            &BootSetup::LongMode {
                entry: CODE,
                stack: 0x8000,
                rsi: 0,
            },
        )
        .unwrap();
        let mut sregs = vcpu.get_sregs().unwrap();
        sregs.idt.base = IDT;
        sregs.idt.limit = 0xfff;
        vcpu.set_sregs(&sregs).unwrap();

        let (tx, reports) = channel();
        let mut pio = PortIoBus::new();
        pio.register(0x80, 2, Arc::new(Mutex::new(Reports(Mutex::new(tx)))))
            .unwrap();
        let eois = Arc::new(AtomicUsize::new(0));
        let (chip, ioapic, io) = match irqchip {
            IrqchipMode::Split { ioapic_pins } => {
                // What a VMM does for `--irqchip split`: the chip over a
                // clone of the VM handle, its IOAPIC on the MMIO bus, the
                // chip as the EOI handler of the arch I/O hook.
                let chip = Arc::new(SplitIrqchip::new(vm.arch_fd().clone(), ioapic_pins).unwrap());
                let dev: Arc<dyn DeviceMmio + Send + Sync> = chip.ioapic();
                let counting = Arc::new(CountingEoi(chip.clone(), eois.clone()));
                let io = X86Io::new(pio).with_eoi_handler(counting);
                (Some(chip), Some(dev), io)
            }
            _ => (None, None, X86Io::from(pio)),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let kicker = vcpu.kicker();
        let stop2 = stop.clone();
        let thread = std::thread::spawn(move || loop {
            let why = |w: String| {
                eprintln!("vCPU thread: {w}");
                w
            };
            if stop2.load(Ordering::SeqCst) {
                return "stopped".to_string();
            }
            match vcpu.run() {
                Ok(VcpuExit::Arch(exit)) => match X86_64::handle_arch_exit(&io, exit) {
                    ArchExitOutcome::Handled => {}
                    other => return why(format!("unhandled {other:?}")),
                },
                Ok(VcpuExit::MmioWrite { addr, data }) => match &ioapic {
                    Some(dev) if (IOAPIC_ADDR..IOAPIC_ADDR + IOAPIC_SIZE).contains(&addr) => {
                        dev.mmio_write(MmioAddress(IOAPIC_ADDR), addr - IOAPIC_ADDR, data)
                    }
                    _ => return why(format!("MMIO write at {addr:#x}")),
                },
                Ok(VcpuExit::MmioRead { addr, data }) => match &ioapic {
                    Some(dev) if (IOAPIC_ADDR..IOAPIC_ADDR + IOAPIC_SIZE).contains(&addr) => {
                        dev.mmio_read(MmioAddress(IOAPIC_ADDR), addr - IOAPIC_ADDR, data)
                    }
                    _ => return why(format!("MMIO read at {addr:#x}")),
                },
                Ok(VcpuExit::Interrupted) => {}
                Ok(e) => return why(format!("unexpected exit {e:?}")),
                Err(e) => return why(format!("KVM_RUN: {e}")),
            }
        });
        let m = Machine {
            vm,
            chip,
            eois,
            _mem: mem,
            reports,
            stop,
            kicker,
            thread: Some(thread),
        };
        assert_eq!(m.next(), (0x80, READY), "the guest is ready");
        m
    }

    /// The next report of the guest.
    fn next(&self) -> (u16, u8) {
        match self.reports.recv_timeout(WAIT) {
            Ok(r) => r,
            Err(e) => {
                let t = self.thread.as_ref().filter(|t| t.is_finished());
                panic!(
                    "no report from the guest within {WAIT:?} ({e}); vCPU thread: {}",
                    if t.is_some() { "ended" } else { "running" }
                )
            }
        }
    }

    fn expect_vector(&self, v: u8) {
        assert_eq!(self.next(), (0x81, v));
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.kicker.kick();
        if let Some(t) = self.thread.take() {
            let why = t.join().unwrap();
            if !std::thread::panicking() {
                assert_eq!(why, "stopped");
            }
        }
    }
}

/// Lines, irqfds and MSIs through `ic`, the guest's entry for `PIN` being
/// edge-triggered with `PIN_VECTOR`.
fn lines_irqfds_and_msis(m: &Machine, ic: &dyn InterruptController) {
    ic.set_irq(PIN, true).unwrap();
    ic.set_irq(PIN, false).unwrap();
    m.expect_vector(PIN_VECTOR);

    let fd = EventFd::new(libc::EFD_NONBLOCK).unwrap();
    ic.register_irqfd(&fd, PIN, None).unwrap();
    fd.write(1).unwrap();
    m.expect_vector(PIN_VECTOR);
    ic.unregister_irqfd(&fd, PIN).unwrap();

    ic.signal_msi(Msi {
        address: 0xfee0_0000,
        data: u32::from(MSI_VECTOR),
        devid: None,
    })
    .unwrap();
    m.expect_vector(MSI_VECTOR);
}

#[test]
fn kvm_in_kernel_irqchip_delivers_lines_irqfds_and_msis() {
    let Some(kvm) = kvm_or_skip!(X86_64) else {
        return;
    };
    kvm.require(Capability::IRQCHIP).unwrap();
    let m = Machine::start(&kvm, IrqchipMode::Kernel, u32::from(PIN_VECTOR));
    let vm = m.vm.clone();
    lines_irqfds_and_msis(&m, vm.arch_fd());
}

fn split_machine(kvm: &Kvm<X86_64>, low: u32) -> (Machine, Arc<SplitIrqchip<X86Vm>>) {
    kvm.require(Capability::SPLIT_IRQCHIP).unwrap();
    let m = Machine::start(kvm, IrqchipMode::Split { ioapic_pins: 24 }, low);
    let chip = m.chip.clone().expect("split mode has a chip");
    (m, chip)
}

#[test]
fn kvm_split_irqchip_delivers_lines_irqfds_and_msis() {
    let Some(kvm) = kvm_or_skip!(X86_64) else {
        return;
    };
    let (m, chip) = split_machine(&kvm, u32::from(PIN_VECTOR));
    // The guest's MMIO writes reached the userspace IOAPIC...
    let e = chip
        .ioapic()
        .lock()
        .unwrap()
        .redirection_entry(PIN)
        .unwrap();
    assert_eq!((e.vector(), e.masked()), (PIN_VECTOR, false));
    // ...which installed the MSI route of GSI 5 for irqfds.
    let routes = chip.ioapic().lock().unwrap().routing_table().clone();
    assert_eq!(routes.routes(PIN).count(), 1);
    // The VM's own controller has no lines in split mode: they are the chip's.
    assert!(m.vm.arch_fd().set_irq(PIN, true).is_err());
    lines_irqfds_and_msis(&m, &*chip);
    assert!(chip.take_error().is_none());
}

#[test]
fn kvm_split_irqchip_level_line_is_redelivered_after_eoi() {
    let Some(kvm) = kvm_or_skip!(X86_64) else {
        return;
    };
    let (m, chip) = split_machine(&kvm, u32::from(PIN_VECTOR) | 1 << 15);
    chip.set_irq(PIN, true).unwrap();
    // Remote IRR holds the line until the guest's EOI comes back as
    // KVM_EXIT_IOAPIC_EOI; the line is still asserted, so it comes again.
    for _ in 0..3 {
        m.expect_vector(PIN_VECTOR);
    }
    chip.set_irq(PIN, false).unwrap();
    assert!(
        m.eois.load(Ordering::SeqCst) >= 2,
        "the EOIs reached the IOAPIC through the arch hook"
    );
    assert!(chip.take_error().is_none());
}

#[test]
fn kvm_split_irqchip_level_irqfd_with_resample() {
    let Some(kvm) = kvm_or_skip!(X86_64) else {
        return;
    };
    let (m, chip) = split_machine(&kvm, u32::from(PIN_VECTOR) | 1 << 15);
    let fd = EventFd::new(libc::EFD_NONBLOCK).unwrap();
    let resample = EventFd::new(0).unwrap();
    chip.register_irqfd(&fd, PIN, Some(&resample)).unwrap();
    fd.write(1).unwrap();
    m.expect_vector(PIN_VECTOR);
    // The guest's EOI of the level-triggered vector signals the resample fd
    // (KVM's own resample needs the in-kernel IOAPIC).
    let (tx, rx) = channel();
    let rs = resample.try_clone().unwrap();
    std::thread::spawn(move || tx.send(rs.read()));
    assert_eq!(rx.recv_timeout(WAIT).unwrap().unwrap(), 1);
    // The device, resampled, asserts again.
    fd.write(1).unwrap();
    m.expect_vector(PIN_VECTOR);
    chip.unregister_irqfd(&fd, PIN).unwrap();
}
