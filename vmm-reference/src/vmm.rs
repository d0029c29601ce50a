//! The composition: memory, kernel, boot data, devices and vCPUs of one VM,
//! and the loop that runs it to its end.

use crate::core::{
    run_machine_with, MachineControl, MachineObserver, MachineStatus, RunStatus, VmmExit,
    QUIT_SIGNAL,
};
use crate::devices::{
    AcpiPm, Cmos, EventFdTrigger, EventSink, I8042Port, PlatformEvent, SerialPort,
};
use crate::kernel::{load_initramfs, load_kernel, BootEntry, HIMEM_START};
use crate::machine::{GsiLine, ThreadTracked, VmmMachine};
use crate::migration::{Deferred, Incoming, Migrator, VmmDestination};
use crate::qmp::{Dispatcher, EventBus, QmpServer};
use crate::state::{MachineShape, StateParts, VmmState};
use crate::{
    terminal, DirtyLogChoice, Error, HostArch, IrqchipChoice, KernelSource, Result, SerialConfig,
    VmmConfig,
};
use kvm_ioctls::IoEventAddress;
use kvmkit_arch_x86_64::{
    e820_map, write_acpi_tables, write_linux_boot_params, write_mptable, write_pvh_start_info,
    AcpiConfig, BootSetup, CpuidPolicy, IrqchipMode, LinuxBoot, PmRegisters, PortIoBus, PvhBoot,
    ResetRegister, SplitIrqchip, VcpuConfig, VmConfig, X86Io, ACPI_SCI_IRQ, BIOS_SIZE, BIOS_START,
    BOOT_STACK_TOP, CMDLINE_ADDR, CMDLINE_MAX_SIZE, IOAPIC_ADDR, IOAPIC_PINS, IOAPIC_SIZE,
    MPTABLE_START,
};
use kvmkit_core::{MemoryFlags, Vcpu, VcpuId, Vm};
use kvmkit_dirty_log::{DirtyTracker, Preference};
use kvmkit_irq::InterruptController;
use kvmkit_memory::{pc_layout, GuestMemoryHandle, RegionConfig, SlotTable};
use kvmkit_runloop::{Buses, MmioBus};
use kvmkit_virtio::{Block, MmioTransport, Net, Tap, VirtioDevice, Worker, MMIO_LEN};
use std::io::{Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::EventFd;

/// The least guest RAM the VMM accepts, in MiB.
pub const MIN_MEMORY_MIB: u64 = 16;
/// What x86 calls the program counter, for exit messages.
pub const PC_NAME: &str = "RIP";
/// The most vCPUs the boot tables describe (one IOAPIC id left in 8 bits).
pub const MAX_VCPUS: u32 = 254;
/// Guest-physical address of the first virtio-mmio device (in the 32-bit
/// PCI hole, never RAM); each device takes 4 KiB after it.
pub const VIRTIO_MMIO_BASE: u64 = 0xd000_0000;
/// The first GSI of the virtio devices: IOAPIC pins 16–23, free of ISA IRQs.
pub const VIRTIO_GSI_BASE: u32 = 16;
/// The most virtio devices (one IOAPIC pin each).
pub const MAX_VIRTIO_DEVICES: usize = 8;
/// Ctrl-A: the serial console's escape key; Ctrl-A x quits.
const ESCAPE: u8 = 0x01;

extern "C" fn on_quit_signal(_: libc::c_int) {
    QUIT_SIGNAL.store(true, Ordering::SeqCst);
}

fn install_quit_signals() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: a zeroed sigaction is valid; we set the handler, an
        // async-signal-safe function that only stores an atomic.
        let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
        sa.sa_sigaction = on_quit_signal as *const () as usize;
        // SAFETY: `sa` is a valid sigaction; the old action is not needed.
        unsafe { libc::sigaction(sig, &sa, std::ptr::null_mut()) };
    }
}

fn host_ram_mib() -> Option<u64> {
    // SAFETY: sysinfo is plain old data; zeroed is valid.
    let mut si: libc::sysinfo = unsafe { std::mem::zeroed() };
    // SAFETY: `si` is a valid, writable sysinfo.
    if unsafe { libc::sysinfo(&mut si) } != 0 {
        return None;
    }
    Some((si.totalram * u64::from(si.mem_unit)) >> 20)
}

/// A VM built from a [`VmmConfig`], ready to run.
pub struct Vmm {
    vm: Arc<Vm<HostArch>>,
    memory: Arc<Mutex<SlotTable<HostArch>>>,
    /// KVM's dirty log for this VM, or why there is none.
    dirty: std::result::Result<Arc<DirtyTracker<HostArch>>, String>,
    vcpus: Vec<Vcpu<HostArch>>,
    buses: Arc<Buses<HostArch>>,
    serial: Arc<Mutex<SerialPort>>,
    stdio: bool,
    platform: Receiver<PlatformEvent>,
    sink: Arc<EventSink>,
    _irqs: Vec<EventFd>,
    workers: Vec<Worker>,
    /// The host thread of each vCPU, recorded when it first runs.
    tids: Vec<Arc<AtomicI64>>,
    /// How the machine loop is controlled (by the QMP server, if any).
    control: MachineControl,
    /// The QMP server on `--api-socket`.
    qmp: Option<QmpServer>,
    /// Outgoing migrations and snapshots (with `--api-socket`).
    migrator: Option<Arc<Migrator>>,
    /// What snapshots and migrations save and restore.
    parts: Arc<StateParts>,
    /// `--incoming`: where the state comes from before the VM runs.
    incoming: Option<Incoming>,
    /// With `--incoming defer`: the URI `migrate-incoming` gives.
    deferred: Option<Receiver<Deferred>>,
}

/// A virtio device's backend, opened before the VM is built.
enum VirtioBackend {
    Block(Block<GuestMemoryHandle>),
    Net(Net<Tap, GuestMemoryHandle>),
}

/// Puts a virtio device on the MMIO bus at `base`: its queue notifications
/// become ioeventfds, its interrupt the irqfd `line`, its work a thread.
fn attach<D: VirtioDevice<GuestMemoryHandle> + 'static>(
    vm: &Vm<HostArch>,
    mmio: &mut MmioBus,
    base: u64,
    device: D,
    mem: GuestMemoryHandle,
    line: Arc<EventFd>,
) -> Result<Worker> {
    let transport = Arc::new(MmioTransport::new(device, mem, line)?);
    let name = transport.name();
    mmio.register(base, MMIO_LEN, transport.clone())
        .map_err(device_err(name, base))?;
    for ev in transport.ioevents() {
        vm.arch_fd()
            .vm_fd()
            .register_ioevent(ev.fd, &IoEventAddress::Mmio(base + ev.offset), ev.datamatch)
            .map_err(|e| Error::Interrupt {
                device: name,
                source: std::io::Error::from_raw_os_error(e.errno()),
            })?;
    }
    Ok(Worker::spawn(transport)?)
}

impl std::fmt::Debug for Vmm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vmm")
            .field("vcpus", &self.vcpus.len())
            .field("ram_bytes", &self.memory().total_bytes())
            .finish_non_exhaustive()
    }
}

fn boot_data<E: std::fmt::Display>(what: &'static str) -> impl FnOnce(E) -> Error {
    move |e| Error::BootData {
        what,
        detail: e.to_string(),
    }
}

fn device_err<E: std::fmt::Debug>(device: &'static str, base: u64) -> impl FnOnce(E) -> Error {
    move |e| Error::Device {
        device,
        base,
        detail: format!("{e:?}"),
    }
}

impl Vmm {
    /// Builds the VM: checks the configuration, maps memory, loads the
    /// kernel, writes the boot data, creates devices and vCPUs.
    pub fn new(config: &VmmConfig) -> Result<Self> {
        let mib = config.memory_mib;
        if mib == 0 {
            return Err(Error::MemoryZero);
        }
        if mib < MIN_MEMORY_MIB {
            return Err(Error::MemoryTooSmall {
                mib,
                min_mib: MIN_MEMORY_MIB,
            });
        }
        if let Some(host_mib) = host_ram_mib().filter(|&h| mib > h) {
            return Err(Error::MemoryTooLarge { mib, host_mib });
        }
        if config.vcpus == 0 {
            return Err(Error::VcpusZero);
        }
        let kvm = kvmkit_core::Kvm::<HostArch>::new()?;
        let max = kvm.max_vcpus().min(MAX_VCPUS);
        if config.vcpus > max {
            return Err(Error::VcpusTooMany {
                vcpus: config.vcpus,
                max,
            });
        }
        // Read the kernel and initramfs before creating anything.
        let (kernel_bytes, kernel_path): (std::borrow::Cow<'_, [u8]>, &Path) = match &config.kernel
        {
            KernelSource::TestGuest => (
                kvmkit_test_guest::TEST_GUEST_ELF.into(),
                Path::new("<built-in test guest>"),
            ),
            KernelSource::Path(p) => (
                std::fs::read(p)
                    .map_err(|source| Error::ReadFile {
                        what: "kernel",
                        path: p.clone(),
                        source,
                    })?
                    .into(),
                p.as_path(),
            ),
        };
        let initramfs = match &config.initramfs {
            Some(p) => Some((
                std::fs::read(p).map_err(|source| Error::ReadFile {
                    what: "initramfs",
                    path: p.clone(),
                    source,
                })?,
                p,
            )),
            None => None,
        };
        // virtio devices: open the backends now, so that a bad disk or tap is
        // an error before anything is created.
        let count = config.disks.len() + config.nets.len();
        if count > MAX_VIRTIO_DEVICES {
            return Err(Error::TooManyVirtioDevices {
                count,
                max: MAX_VIRTIO_DEVICES,
            });
        }
        let mut backends: Vec<VirtioBackend> = Vec::new();
        for d in &config.disks {
            backends.push(VirtioBackend::Block(Block::open(&d.path, d.readonly)?));
        }
        for n in &config.nets {
            backends.push(VirtioBackend::Net(Net::new(Tap::open(&n.tap)?, n.mac)));
        }
        // At most MAX_VIRTIO_DEVICES: the index fits every integer type.
        let slots: Vec<(u64, u32)> = (0u32..)
            .take(count)
            .map(|i| {
                (
                    VIRTIO_MMIO_BASE + 0x1000 * u64::from(i),
                    VIRTIO_GSI_BASE + i,
                )
            })
            .collect();
        // Kernels built with CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES find the
        // devices here; the others through the DSDT.
        let mut full_cmdline = config.cmdline.clone();
        for (base, gsi) in &slots {
            full_cmdline.push_str(&format!(" virtio_mmio.device=4K@{base:#x}:{gsi}"));
        }
        let cmdline = full_cmdline.as_bytes();
        if cmdline.len() >= CMDLINE_MAX_SIZE || cmdline.contains(&0) {
            return Err(Error::Cmdline(format!(
                "{} bytes; at most {} and no NUL",
                cmdline.len(),
                CMDLINE_MAX_SIZE - 1
            )));
        }
        let serial_out: crate::devices::SerialOut = match &config.serial {
            SerialConfig::Stdio => Box::new(std::io::stdout()),
            SerialConfig::None => Box::new(std::io::sink()),
            SerialConfig::File(p) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .map_err(|source| Error::SerialFile {
                        path: p.clone(),
                        source,
                    })?,
            ),
        };

        let vm_config = VmConfig {
            irqchip: match config.irqchip {
                IrqchipChoice::Kernel => IrqchipMode::Kernel,
                IrqchipChoice::Split => IrqchipMode::Split {
                    ioapic_pins: IOAPIC_PINS,
                },
            },
            // The PIT needs the in-kernel PIC and IOAPIC.
            pit: config.irqchip == IrqchipChoice::Kernel,
            ..Default::default()
        };
        let vm = Arc::new(kvm.create_vm(&vm_config)?);

        // The dirty log: one tracker per VM, created before any vCPU (the
        // ring needs that) and before logging is on anywhere.
        let dirty = match config.dirty_log {
            DirtyLogChoice::Ring => Ok(Arc::new(DirtyTracker::new(
                vm.clone(),
                Preference::Ring {
                    bytes: kvmkit_dirty_log::DEFAULT_RING_BYTES,
                },
            )?)),
            DirtyLogChoice::Bitmap => DirtyTracker::new(vm.clone(), Preference::ManualProtect)
                .or_else(|_| DirtyTracker::new(vm.clone(), Preference::GetLog))
                .map(Arc::new)
                .map_err(|e| e.to_string()),
        };

        // Memory: RAM with the PC holes, and a read-only BIOS area for tables.
        let mut memory = SlotTable::<HostArch>::for_vm(vm.clone())?;
        let layout = pc_layout(mib << 20)?;
        let snapshot = match &config.restore {
            None => {
                memory.add_ram(&layout, MemoryFlags::NONE)?;
                None
            }
            Some(dir) => Some(map_snapshot(&mut memory, dir, &layout)?),
        };
        memory.add(RegionConfig::anonymous(GuestAddress(BIOS_START), BIOS_SIZE).read_only(true))?;
        let mem = memory.guest_memory();
        // A restored or incoming VM gets its memory and state from elsewhere:
        // nothing is loaded or written for a boot.
        let fresh = config.restore.is_none() && config.incoming.is_none();

        // Boot data in RAM goes to the guest's memory for a fresh boot, and
        // to a scratch copy (mapped lazily, dropped after set-up) otherwise:
        // the same code computes the boot set-up either way. The ACPI and MP
        // tables live in the read-only BIOS slot, which snapshots and
        // migrations do not carry, so they are written in every case.
        let boot_mem = if fresh {
            mem.clone()
        } else {
            let ranges: Vec<(GuestAddress, usize)> = layout
                .iter()
                .map(|(a, l)| (*a, usize::try_from(*l).unwrap_or(usize::MAX)))
                .collect();
            Arc::new(
                vm_memory::GuestMemoryMmap::from_ranges(&ranges)
                    .map_err(boot_data("scratch memory for the boot data"))?,
            )
        };
        let kernel = load_kernel(&boot_mem, &kernel_bytes, kernel_path)?;
        boot_mem
            .write_slice(cmdline, GuestAddress(CMDLINE_ADDR))
            .and_then(|()| {
                boot_mem.write_obj(0u8, GuestAddress(CMDLINE_ADDR + cmdline.len() as u64))
            })
            .map_err(boot_data("kernel command line"))?;
        // The initramfs goes at the top of the RAM range the kernel is in,
        // below the kernel's limit (initrd_addr_max, 0x37ffffff by default).
        let initrd = match initramfs {
            Some((bytes, path)) => {
                let ram_top = layout
                    .iter()
                    .find(|(a, l)| a.0 <= HIMEM_START && HIMEM_START < a.0 + l)
                    .map_or(HIMEM_START, |(a, l)| a.0 + l);
                let max = kernel
                    .setup_header
                    .map_or(0x3800_0000, |h| u64::from(h.initrd_addr_max) + 1);
                Some(load_initramfs(
                    &boot_mem,
                    &bytes,
                    path,
                    kernel.end,
                    ram_top.min(max),
                )?)
            }
            None => None,
        };

        let ram: Vec<(u64, u64)> = layout.iter().map(|(a, l)| (a.0, *l)).collect();
        let e820 = e820_map(&ram);
        let rsdp = write_acpi_tables(
            mem.as_ref(),
            &AcpiConfig {
                nr_vcpus: config.vcpus,
                serial_ports: vec![kvmkit_arch_x86_64::SerialPort {
                    base: SerialPort::COM1,
                    irq: SerialPort::COM1_IRQ,
                }],
                mmio_devices: (0u32..)
                    .zip(&slots)
                    .map(|(uid, &(base, irq))| kvmkit_arch_x86_64::MmioDevice {
                        hid: "LNRO0005",
                        uid,
                        base,
                        len: MMIO_LEN,
                        irq,
                    })
                    .collect(),
                pm: PmRegisters {
                    pm1a_evt: AcpiPm::EVT_PORT,
                    pm1a_cnt: AcpiPm::CNT_PORT,
                    sleep_s5_typ: AcpiPm::S5_TYPE,
                },
                reset: ResetRegister {
                    port: I8042Port::BASE + 4,
                    value: 0xfe,
                },
            },
        )
        .map_err(boot_data("ACPI tables"))?;
        write_mptable(mem.as_ref(), MPTABLE_START, config.vcpus).map_err(boot_data("MP table"))?;
        let boot = match kernel.entry {
            BootEntry::Linux64 { entry } => {
                let zero_page = write_linux_boot_params(
                    boot_mem.as_ref(),
                    &LinuxBoot {
                        setup_header: kernel.setup_header,
                        cmdline_addr: CMDLINE_ADDR,
                        cmdline_len: cmdline.len(),
                        initrd,
                        e820: &e820,
                        rsdp_addr: rsdp,
                    },
                )
                .map_err(boot_data("zero page"))?;
                BootSetup::LongMode {
                    entry,
                    stack: BOOT_STACK_TOP,
                    rsi: zero_page,
                }
            }
            BootEntry::Pvh { entry } => {
                let start_info = write_pvh_start_info(
                    boot_mem.as_ref(),
                    &PvhBoot {
                        cmdline_addr: CMDLINE_ADDR,
                        initrd,
                        e820: &e820,
                        rsdp_addr: rsdp,
                    },
                )
                .map_err(boot_data("PVH start_info"))?;
                BootSetup::Protected32 {
                    entry,
                    ebx: u32::try_from(start_info).map_err(boot_data("PVH start_info"))?,
                }
            }
        };

        // The interrupt controller devices get their lines from: KVM's, or
        // with the split irqchip ours (whose IOAPIC goes on the MMIO bus).
        let split = match config.irqchip {
            IrqchipChoice::Kernel => None,
            IrqchipChoice::Split => Some(Arc::new(SplitIrqchip::new(
                vm.arch_fd().clone(),
                IOAPIC_PINS,
            )?)),
        };
        let irq_ctl: Arc<dyn InterruptController> = match &split {
            Some(chip) => chip.clone(),
            None => Arc::new(vm.arch_fd().clone()),
        };
        let irqfd = |device: &'static str, gsi: u32| -> Result<EventFd> {
            let fd = EventFd::new(libc::EFD_NONBLOCK)
                .map_err(|source| Error::Interrupt { device, source })?;
            irq_ctl.register_irqfd(&fd, gsi, None)?;
            Ok(fd)
        };

        // Devices on the port I/O bus; COM1's interrupt is an irqfd on GSI 4.
        let (ptx, platform) = channel();
        let sink = Arc::new(EventSink::new(ptx));
        let com1_irq = irqfd("serial COM1", SerialPort::COM1_IRQ)?;
        let trigger = com1_irq.try_clone().map_err(|source| Error::Interrupt {
            device: "serial COM1",
            source,
        })?;
        let serial = Arc::new(SerialPort::new(EventFdTrigger(trigger), serial_out));
        let below_4g: u64 = ram
            .iter()
            .filter(|(a, _)| *a < 1 << 32)
            .map(|(_, l)| l)
            .sum();
        let above_4g: u64 = ram
            .iter()
            .filter(|(a, _)| *a >= 1 << 32)
            .map(|(_, l)| l)
            .sum();
        let mut pio = PortIoBus::new();
        pio.register(SerialPort::COM1, SerialPort::LEN, serial.clone())
            .map_err(device_err("serial COM1", u64::from(SerialPort::COM1)))?;
        let i8042 = Arc::new(I8042Port::new(sink.clone()));
        pio.register(I8042Port::BASE, I8042Port::LEN, i8042.clone())
            .map_err(device_err("i8042", u64::from(I8042Port::BASE)))?;
        let cmos = Arc::new(Mutex::new(Cmos::new(below_4g, above_4g)));
        pio.register(
            Cmos::<crate::devices::HostClock>::BASE,
            Cmos::<crate::devices::HostClock>::LEN,
            cmos.clone(),
        )
        .map_err(device_err("CMOS RTC", 0x70))?;
        // The PM block raises the SCI on GSI 9 (level, active high, as the
        // MADT's override says) for the power button.
        let power = Arc::new(Mutex::new(AcpiPm::with_sci(
            sink.clone(),
            GsiLine {
                irq: irq_ctl.clone(),
                gsi: u32::from(ACPI_SCI_IRQ),
            },
        )));
        pio.register(AcpiPm::EVT_PORT, AcpiPm::LEN, power.clone())
            .map_err(device_err("ACPI PM", u64::from(AcpiPm::EVT_PORT)))?;
        let mut mmio = MmioBus::new();
        let split_state = split.clone();
        let arch_io = match split {
            None => X86Io::new(pio),
            Some(chip) => {
                // Our IOAPIC: on the MMIO bus, told of EOIs by KVM.
                mmio.register(IOAPIC_ADDR, IOAPIC_SIZE, chip.ioapic())
                    .map_err(device_err("IOAPIC", IOAPIC_ADDR))?;
                X86Io::new(pio).with_eoi_handler(chip)
            }
        };
        let mut workers = Vec::new();
        let irqs = vec![com1_irq];
        for (backend, &(base, gsi)) in backends.into_iter().zip(&slots) {
            let line = Arc::new(irqfd("virtio", gsi)?);
            let mem = memory.memory();
            workers.push(match backend {
                VirtioBackend::Block(b) => attach(&vm, &mut mmio, base, b, mem, line)?,
                VirtioBackend::Net(n) => attach(&vm, &mut mmio, base, n, mem, line)?,
            });
        }
        let mut buses = Buses::<HostArch>::new(mmio, arch_io);
        if let Some(t) = dirty.as_ref().ok().filter(|t| t.backend().is_ring()) {
            // A full ring is harvested before its vCPU enters again.
            buses = buses.with_dirty_ring_full(t.ring_full_hook());
        }
        let buses = Arc::new(buses);

        let vcpu_config = VcpuConfig {
            cpuid: Some(CpuidPolicy {
                nr_vcpus: config.vcpus,
                hypervisor_bit: true,
            }),
            boot_msrs: true,
            lapic_lints: true,
        };
        let mut vcpus = Vec::new();
        for id in 0..config.vcpus {
            let vcpu = vm.create_vcpu(VcpuId(id), &vcpu_config)?;
            if let Ok(t) = &dirty {
                // Maps the vCPU's ring (ring backend; nothing otherwise).
                t.attach_vcpu(&vcpu)?;
            }
            vcpus.push(vcpu);
        }
        // The BSP starts at the kernel entry; KVM holds the APs in
        // wait-for-SIPI until the guest starts them through its LAPIC.
        if fresh {
            vcpus[0].setup_boot(mem.as_ref(), &boot)?;
        }
        drop(boot_mem);

        let parts = Arc::new(StateParts {
            kvm: kvm.clone(),
            vm: vm.clone(),
            vm_config: vm_config.clone(),
            vcpu_config: vcpu_config.clone(),
            shape: MachineShape {
                memory_mib: mib,
                vcpus: config.vcpus,
                irqchip: match config.irqchip {
                    IrqchipChoice::Kernel => "kernel".to_string(),
                    IrqchipChoice::Split => "split".to_string(),
                },
            },
            serial: serial.clone(),
            cmos,
            i8042,
            power: power.clone(),
            split: split_state,
            virtio: count,
            host: std::sync::OnceLock::new(),
        });
        if let (Some((snap, started)), Some(dir)) = (&snapshot, &config.restore) {
            crate::migration::check_profile_frame(&parts, &snap.profile, "the saved VM")
                .map_err(Error::Restore)?;
            let state: VmmState = serde_json::from_value(snap.state.clone()).map_err(|e| {
                Error::Restore(format!(
                    "the snapshot in {} has an unreadable state: {e}",
                    dir.display()
                ))
            })?;
            parts.restore(&vcpus, &state).map_err(Error::Restore)?;
            eprintln!(
                "vmm-reference: restored the snapshot in {} ({:.2} ms since start of restore)",
                dir.display(),
                started.elapsed().as_secs_f64() * 1000.0
            );
        }

        // The control socket: bound now, so that a bad path is a set-up
        // error; it accepts connections once the VM runs.
        let tids: Vec<Arc<AtomicI64>> = vcpus.iter().map(|_| Arc::new(AtomicI64::new(0))).collect();
        let memory = Arc::new(Mutex::new(memory));
        let (mut deferred_tx, deferred) = match config.incoming {
            Some(Incoming::Defer) => {
                if config.api_socket.is_none() {
                    return Err(Error::Incoming(
                        "--incoming defer needs --api-socket (migrate-incoming comes over QMP)"
                            .to_string(),
                    ));
                }
                let (tx, rx) = channel();
                (Some(tx), Some(rx))
            }
            _ => (None, None),
        };
        let (control, qmp, migrator) = match &config.api_socket {
            None => (MachineControl::none(), None, None),
            Some(path) => {
                let status = Arc::new(MachineStatus::new());
                let events = Arc::new(EventBus::new());
                let observer: Arc<dyn MachineObserver> = events.clone();
                let (control, requests) = MachineControl::channel(status.clone(), Some(observer));
                let machine = VmmMachine {
                    requests,
                    status,
                    power,
                    tids: tids.clone(),
                    memory: mem.clone(),
                    target: "x86_64",
                    dirty: dirty.clone().map(|tracker| crate::machine::DirtySource {
                        tracker,
                        table: memory.clone(),
                    }),
                };
                let migrator = Arc::new(Migrator {
                    requests: machine.requests.clone(),
                    status: machine.status.clone(),
                    memory: mem.clone(),
                    table: memory.clone(),
                    tracker: dirty.clone(),
                    parts: parts.clone(),
                    events: events.clone(),
                    job: Mutex::new(None),
                    deferred: Arc::new(Mutex::new(deferred_tx.take())),
                });
                let mut dispatcher = Dispatcher::new(Arc::new(machine), events);
                crate::migration::register(&mut dispatcher, migrator.clone());
                let saver_parts = parts.clone();
                let control = control.with_state_saver(Arc::new(move |vcpus| {
                    let vcpus = vcpus
                        .downcast_mut::<Vec<ThreadTracked<Vcpu<HostArch>>>>()
                        .ok_or("the machine's vCPUs are not this VMM's")?;
                    let refs: Vec<&Vcpu<HostArch>> = vcpus.iter().map(|t| &t.vcpu).collect();
                    let state = saver_parts.save(&refs)?;
                    serde_json::to_value(state).map_err(|e| e.to_string())
                }));
                (
                    control,
                    Some(QmpServer::bind(path, Arc::new(dispatcher))?),
                    Some(migrator),
                )
            }
        };

        Ok(Vmm {
            vm,
            memory,
            dirty,
            vcpus,
            buses,
            serial,
            stdio: config.serial == SerialConfig::Stdio,
            platform,
            sink,
            _irqs: irqs,
            workers,
            tids,
            control,
            qmp,
            migrator,
            parts,
            incoming: config.incoming.clone(),
            deferred,
        })
    }

    /// The VM.
    pub fn vm(&self) -> &Arc<Vm<HostArch>> {
        &self.vm
    }

    /// The memory-slot table (locked: the QMP dirty-rate measurement turns
    /// dirty logging on and off through it while the VM runs).
    pub fn memory(&self) -> MutexGuard<'_, SlotTable<HostArch>> {
        self.memory.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// KVM's dirty log for this VM (`--dirty-log`), or why there is none.
    pub fn dirty_tracker(&self) -> std::result::Result<&Arc<DirtyTracker<HostArch>>, &str> {
        self.dirty.as_ref().map_err(String::as_str)
    }

    /// Takes the VM's memory and state from an incoming migration, before
    /// any vCPU runs; QMP reports `inmigrate` meanwhile and `MIGRATION`
    /// events.
    fn receive(&mut self, incoming: Incoming) -> Result<()> {
        let status = self.migrator.as_ref().map(|m| m.status.clone());
        if let Some(s) = &status {
            s.set(RunStatus::InMigrate);
        }
        let what = match incoming {
            Incoming::At(uri) => Deferred::Migration(uri),
            Incoming::Defer => {
                let rx = self.deferred.take().ok_or_else(|| {
                    Error::Incoming("--incoming defer without a QMP socket".to_string())
                })?;
                loop {
                    if QUIT_SIGNAL.load(Ordering::SeqCst) {
                        return Err(Error::Incoming(
                            "quit while waiting for migrate-incoming".to_string(),
                        ));
                    }
                    match rx.recv_timeout(Duration::from_millis(100)) {
                        Ok(what) => break what,
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
                        Err(_) => {
                            return Err(Error::Incoming(
                                "the QMP server ended before migrate-incoming".to_string(),
                            ))
                        }
                    }
                }
            }
        };
        if let Some(m) = &self.migrator {
            m.emit(kvmkit_migration::Status::Setup);
            m.emit(kvmkit_migration::Status::Active);
        }
        let mem = self.memory().guest_memory();
        let mut dest = VmmDestination {
            memory: &mem,
            table: &self.memory,
            parts: &self.parts,
            vcpus: &self.vcpus,
        };
        let res = match &what {
            Deferred::Migration(uri) => {
                crate::migration::receive_incoming(uri, &mut dest).map(drop)
            }
            Deferred::Snapshot(dir) => crate::migration::load_snapshot_into(dir, &mut dest),
        };
        if let Some(m) = &self.migrator {
            m.emit(if res.is_ok() {
                kvmkit_migration::Status::Completed
            } else {
                kvmkit_migration::Status::Failed
            });
        }
        res.map_err(Error::Incoming)?;
        if let Some(s) = &status {
            s.set(RunStatus::Running);
        }
        Ok(())
    }

    /// Runs the VM until the guest powers off, resets or fails, or the user
    /// quits; the terminal is restored whatever happens.
    pub fn run(mut self) -> Result<VmmExit> {
        install_quit_signals();
        if let Some(q) = &mut self.qmp {
            q.start()?;
        }
        if let Some(incoming) = self.incoming.take() {
            self.receive(incoming)?;
        }
        let raw = if self.stdio {
            terminal::RawMode::enter().ok().flatten()
        } else {
            None
        };
        if self.stdio {
            spawn_input(self.serial.clone(), self.sink.clone(), raw.is_some());
        }
        let vcpus: Vec<ThreadTracked<Vcpu<HostArch>>> = self
            .vcpus
            .into_iter()
            .zip(&self.tids)
            .map(|(vcpu, tid)| ThreadTracked {
                vcpu,
                tid: tid.clone(),
            })
            .collect();
        let (exit, vcpus) =
            run_machine_with(vcpus, self.buses.clone(), self.platform, self.control)?;
        let vcpus: Vec<Vcpu<HostArch>> = vcpus.into_iter().map(|t| t.vcpu).collect();
        if let Some(m) = &self.migrator {
            m.join();
        }
        // QMP clients get the SHUTDOWN event before the connections close.
        if let Some(mut q) = self.qmp.take() {
            q.shutdown();
        }
        for w in self.workers {
            // A worker that failed to stop cleanly has nothing left to lose.
            let _ = w.stop();
        }
        if std::env::var("KVMKIT_DEBUG").is_ok_and(|v| v == "1") {
            for v in &vcpus {
                let regs = v.get_regs().ok();
                let sregs = v.get_sregs().ok();
                eprintln!(
                    "vmm-reference: vCPU {} stopped at RIP {:x?}, CR0 {:x?}, EFER {:x?}",
                    v.id(),
                    regs.map(|r| r.rip),
                    sregs.map(|s| s.cr0),
                    sregs.map(|s| s.efer)
                );
            }
        }
        self.serial
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .flush();
        drop(raw);
        Ok(exit)
    }
}

/// Forwards stdin to the serial port; Ctrl-A x quits (on a terminal).
fn spawn_input(serial: Arc<Mutex<SerialPort>>, sink: Arc<EventSink>, tty: bool) {
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin();
        let mut buf = [0u8; 64];
        let mut escape = false;
        loop {
            let n = match stdin.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let mut out = Vec::with_capacity(n);
            for &b in &buf[..n] {
                if tty && escape {
                    escape = false;
                    match b {
                        b'x' | b'X' => {
                            sink.send(PlatformEvent::Quit);
                            return;
                        }
                        ESCAPE => out.push(ESCAPE),
                        _ => {}
                    }
                } else if tty && b == ESCAPE {
                    escape = true;
                } else {
                    out.push(b);
                }
            }
            let mut rest = &out[..];
            while !rest.is_empty() {
                let done = serial
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .enqueue(rest);
                rest = &rest[done..];
                if !rest.is_empty() {
                    // The guest has not drained the FIFO yet.
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
            let _ = std::io::stdout().flush();
        }
    });
}

/// Maps the RAM of the snapshot in `dir` privately (copy-on-write, read
/// lazily) into `memory`, after checking it has the layout this machine
/// needs; returns the snapshot and when the restore started.
fn map_snapshot(
    memory: &mut SlotTable<HostArch>,
    dir: &Path,
    layout: &[(GuestAddress, u64)],
) -> Result<(kvmkit_migration::Snapshot, std::time::Instant)> {
    let started = std::time::Instant::now();
    let snap = kvmkit_migration::load_snapshot(dir).map_err(|e| {
        Error::Restore(format!(
            "cannot read the snapshot in {}: {}",
            dir.display(),
            crate::state::error_chain(&e)
        ))
    })?;
    let want: Vec<(u64, u64)> = layout.iter().map(|(a, l)| (a.0, *l)).collect();
    let have: Vec<(u64, u64)> = snap.layout.iter().map(|r| (r.gpa, r.len)).collect();
    if want != have {
        return Err(Error::Restore(format!(
            "the snapshot in {} has guest RAM {have:x?}, this machine {want:x?} (start it with the saved VM's --memory)",
            dir.display()
        )));
    }
    let file = std::fs::File::open(&snap.memory).map_err(|source| Error::ReadFile {
        what: "snapshot memory",
        path: snap.memory.clone(),
        source,
    })?;
    for r in &snap.layout {
        let fo = vm_memory::FileOffset::new(
            file.try_clone().map_err(|source| Error::ReadFile {
                what: "snapshot memory",
                path: snap.memory.clone(),
                source,
            })?,
            r.file_offset,
        );
        memory.add(RegionConfig::file_private(GuestAddress(r.gpa), r.len, fo))?;
    }
    Ok((snap, started))
}
