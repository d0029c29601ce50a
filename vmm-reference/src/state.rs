//! The whole state of a paused VM (vCPUs, VM-wide KVM state, devices) for
//! snapshots and live migration, and its ABI profile.

use crate::devices::{AcpiPm, Cmos, DevicesState, I8042Port, SerialPort};
use crate::machine::GsiLine;
use crate::HostArch;
use kvmkit_arch_x86_64::{SplitIrqchip, VcpuConfig, VmConfig, X86Vm};
use kvmkit_core::{Arch, Kvm, SnapshotArch, Vcpu, Vm};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};

/// The format version of [`VmmState`].
pub const STATE_VERSION: u32 = 1;

type VcpuState = <HostArch as Arch>::VcpuState;
type VmState = <HostArch as SnapshotArch>::VmState;
type AbiProfile = <HostArch as SnapshotArch>::AbiProfile;

/// The machine shape the state belongs to; a restore needs the same.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineShape {
    /// Guest RAM in MiB.
    pub memory_mib: u64,
    /// vCPUs.
    pub vcpus: u32,
    /// `kernel` or `split`.
    pub irqchip: String,
}

/// Everything a paused VM needs to continue elsewhere, guest memory aside.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VmmState {
    /// [`STATE_VERSION`].
    pub version: u32,
    /// The machine shape.
    pub shape: MachineShape,
    /// What the state needs from KVM (derived from the state itself).
    pub profile: AbiProfile,
    /// VM-wide KVM state (irqchip, PIT, clock).
    pub vm: VmState,
    /// Each vCPU's state, in index order.
    pub vcpus: Vec<VcpuState>,
    /// The devices.
    pub devices: DevicesState,
}

/// Handles on everything whose state is saved, kept by the VMM.
pub(crate) struct StateParts {
    pub(crate) kvm: Kvm<HostArch>,
    pub(crate) vm: Arc<Vm<HostArch>>,
    pub(crate) vm_config: VmConfig,
    pub(crate) vcpu_config: VcpuConfig,
    pub(crate) shape: MachineShape,
    pub(crate) serial: Arc<Mutex<SerialPort>>,
    pub(crate) cmos: Arc<Mutex<Cmos>>,
    pub(crate) i8042: Arc<Mutex<I8042Port>>,
    pub(crate) power: Arc<Mutex<AcpiPm<GsiLine>>>,
    pub(crate) split: Option<Arc<SplitIrqchip<X86Vm>>>,
    /// virtio devices attached (their state is not saved yet).
    pub(crate) virtio: usize,
    /// This host's ABI profile, once computed.
    pub(crate) host: std::sync::OnceLock<AbiProfile>,
}

impl std::fmt::Debug for StateParts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateParts")
            .field("shape", &self.shape)
            .field("virtio", &self.virtio)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl StateParts {
    /// Fails when something attached cannot be saved.
    pub(crate) fn check_saveable(&self) -> Result<(), String> {
        if self.virtio > 0 {
            return Err(format!(
                "cannot save the VM's state: its {} virtio device(s) have no saved state yet \
                 (snapshots and migration work without --disk and --net)",
                self.virtio
            ));
        }
        Ok(())
    }

    /// This host's ABI profile for this machine, computed once: describing
    /// it builds a scratch VM (20–30 ms under PVM), which must not happen
    /// while the guest is paused. Callers warm it up outside pauses
    /// (before connecting, before pausing for a snapshot).
    pub(crate) fn host_profile(&self) -> Result<AbiProfile, String> {
        if let Some(p) = self.host.get() {
            return Ok(p.clone());
        }
        let p = self
            .kvm
            .abi_profile(&self.vm_config, &self.vcpu_config)
            .map_err(|e| format!("cannot describe this host's KVM: {e}"))?;
        Ok(self.host.get_or_init(|| p).clone())
    }

    /// Checks that this host can run a state whose profile is `saved`
    /// (`whose`: "the saved VM", "the source's VM").
    pub(crate) fn check_profile(&self, saved: &AbiProfile, whose: &str) -> Result<(), String> {
        let host = self.host_profile()?;
        HostArch::check_profile(saved, &host)
            .map_err(|e| format!("this host cannot run {whose}: {e}"))
    }

    /// Saves the paused VM: VM-wide state, vCPUs, devices.
    pub(crate) fn save(&self, vcpus: &[&Vcpu<HostArch>]) -> Result<VmmState, String> {
        self.check_saveable()?;
        // Device output already produced goes out before the state is taken.
        lock(&self.serial).flush();
        let vm = self
            .vm
            .save_state()
            .map_err(|e| format!("cannot save the VM state: {e}"))?;
        let mut states = Vec::with_capacity(vcpus.len());
        for v in vcpus {
            states.push(
                v.save_state()
                    .map_err(|e| format!("cannot save the state of vCPU {}: {e}", v.id()))?,
            );
        }
        let devices = DevicesState::new(
            lock(&self.serial).state(),
            lock(&self.cmos).state(),
            lock(&self.power).state(),
            lock(&self.i8042).state(),
            self.split.as_ref().map(|s| s.state()),
        );
        Ok(VmmState {
            version: STATE_VERSION,
            shape: self.shape.clone(),
            profile: HostArch::state_profile(&vm, &states),
            vm,
            vcpus: states,
            devices,
        })
    }

    /// Checks `state` against this machine and host without changing
    /// anything: version, shape, ABI profile, device state.
    pub(crate) fn check(&self, state: &VmmState) -> Result<(), String> {
        if state.version != STATE_VERSION {
            return Err(format!(
                "the saved state has format version {}, this VMM reads version {STATE_VERSION}",
                state.version
            ));
        }
        if state.shape != self.shape {
            return Err(format!(
                "the saved state is of a machine with {} MiB, {} vCPU(s), irqchip {}; this one has {} MiB, {} vCPU(s), irqchip {} (start it with the same --memory, --vcpus and --irqchip)",
                state.shape.memory_mib,
                state.shape.vcpus,
                state.shape.irqchip,
                self.shape.memory_mib,
                self.shape.vcpus,
                self.shape.irqchip
            ));
        }
        if state.vcpus.len() != usize::try_from(self.shape.vcpus).unwrap_or(usize::MAX) {
            return Err(format!(
                "the saved state has {} vCPU states for {} vCPUs",
                state.vcpus.len(),
                self.shape.vcpus
            ));
        }
        self.check_profile(&state.profile, "the saved VM")?;
        state
            .devices
            .check()
            .map_err(|e| format!("the saved device state is invalid: {e}"))?;
        Ok(())
    }

    /// Restores `state` (checked first) into this machine, whose memory
    /// already holds the guest's: VM state, vCPU states, then devices.
    pub(crate) fn restore(&self, vcpus: &[Vcpu<HostArch>], state: &VmmState) -> Result<(), String> {
        self.check(state)?;
        self.vm
            .restore_state(&state.vm)
            .map_err(|e| format!("cannot restore the VM state: {}", error_chain(&e)))?;
        for (v, s) in vcpus.iter().zip(&state.vcpus) {
            v.restore_state(s).map_err(|e| {
                format!(
                    "cannot restore the state of vCPU {}: {}",
                    v.id(),
                    error_chain(&e)
                )
            })?;
        }
        let d = &state.devices;
        match (&self.split, &d.ioapic) {
            (Some(chip), Some(s)) => chip
                .restore(s)
                .map_err(|e| format!("cannot restore the IOAPIC: {e}"))?,
            (None, None) => {}
            _ => return Err("the saved IOAPIC does not match this irqchip mode".to_string()),
        }
        let dev = |e: crate::devices::DeviceStateError| format!("cannot restore a device: {e}");
        lock(&self.serial).restore(&d.serial).map_err(dev)?;
        lock(&self.power).restore(&d.acpi_pm).map_err(dev)?;
        lock(&self.cmos).restore(&d.cmos).map_err(dev)?;
        lock(&self.i8042).restore(&d.i8042).map_err(dev)?;
        Ok(())
    }
}

/// `e` and its sources, joined with `": "`.
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let t = s.to_string();
        if !out.ends_with(&t) {
            out.push_str(": ");
            out.push_str(&t);
        }
        source = s.source();
    }
    out
}
