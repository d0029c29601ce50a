//! Typed configuration of the reference VMM.

use std::path::PathBuf;

/// The command line a guest gets when none is given.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 reboot=k panic=-1 pci=off";

/// Guest RAM when `--memory` is not given, in MiB.
pub const DEFAULT_MEMORY_MIB: u64 = 512;

/// What to boot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KernelSource {
    /// The project test guest built into this binary.
    TestGuest,
    /// A bzImage or ELF vmlinux file (PVH entry used when the ELF has the note).
    Path(PathBuf),
}

/// Where the guest's serial console goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SerialConfig {
    /// This process's stdin and stdout (raw mode on a terminal).
    Stdio,
    /// Output appended to a file; no input.
    File(PathBuf),
    /// Output discarded; no input.
    None,
}

impl std::str::FromStr for SerialConfig {
    type Err = String;

    /// Parses `stdio`, `file=PATH` or `none`.
    ///
    /// ```
    /// use kvmkit_vmm_reference::SerialConfig;
    /// assert_eq!("stdio".parse(), Ok(SerialConfig::Stdio));
    /// assert_eq!("file=/tmp/x".parse(), Ok(SerialConfig::File("/tmp/x".into())));
    /// assert!("tcp=1".parse::<SerialConfig>().is_err());
    /// ```
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "stdio" => Ok(SerialConfig::Stdio),
            "none" => Ok(SerialConfig::None),
            _ => match s.strip_prefix("file=") {
                Some(p) if !p.is_empty() => Ok(SerialConfig::File(PathBuf::from(p))),
                _ => Err(format!("'{s}' is not one of stdio, file=PATH, none")),
            },
        }
    }
}

/// A virtio-blk disk: `--disk path=FILE[,readonly=on]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskConfig {
    /// The raw image file.
    pub path: PathBuf,
    /// Refuse guest writes (the device offers `VIRTIO_BLK_F_RO`).
    pub readonly: bool,
}

impl std::str::FromStr for DiskConfig {
    type Err = String;

    /// Parses `path=FILE[,readonly=on|off]`.
    ///
    /// ```
    /// use kvmkit_vmm_reference::DiskConfig;
    /// let d: DiskConfig = "path=/tmp/d.img,readonly=on".parse().unwrap();
    /// assert!(d.readonly);
    /// assert!("readonly=on".parse::<DiskConfig>().is_err());
    /// ```
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut path = None;
        let mut readonly = false;
        for kv in s.split(',') {
            match kv.split_once('=') {
                Some(("path", p)) if !p.is_empty() => path = Some(PathBuf::from(p)),
                Some(("readonly", "on")) => readonly = true,
                Some(("readonly", "off")) => readonly = false,
                _ => return Err(format!("'{kv}' is not path=FILE or readonly=on|off")),
            }
        }
        let path = path.ok_or("path=FILE is missing")?;
        Ok(DiskConfig { path, readonly })
    }
}

/// A virtio-net interface on a tap: `--net tap=NAME[,mac=MAC]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetConfig {
    /// The tap interface (created if it does not exist; `%d` picks a number).
    pub tap: String,
    /// The guest's MAC address; a random locally administered one if absent.
    pub mac: Option<[u8; 6]>,
}

impl std::str::FromStr for NetConfig {
    type Err = String;

    /// Parses `tap=NAME[,mac=aa:bb:cc:dd:ee:ff]`.
    ///
    /// ```
    /// use kvmkit_vmm_reference::NetConfig;
    /// let n: NetConfig = "tap=vm0,mac=52:54:00:12:34:56".parse().unwrap();
    /// assert_eq!(n.mac, Some([0x52, 0x54, 0, 0x12, 0x34, 0x56]));
    /// assert!("tap=vm0,mac=zz".parse::<NetConfig>().is_err());
    /// ```
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut tap = None;
        let mut mac = None;
        for kv in s.split(',') {
            match kv.split_once('=') {
                Some(("tap", t)) if !t.is_empty() && t.len() < 16 => tap = Some(t.to_string()),
                Some(("mac", m)) => mac = Some(parse_mac(m)?),
                _ => {
                    return Err(format!(
                        "'{kv}' is not tap=NAME (under 16 bytes) or mac=MAC"
                    ))
                }
            }
        }
        let tap = tap.ok_or("tap=NAME is missing")?;
        Ok(NetConfig { tap, mac })
    }
}

fn parse_mac(m: &str) -> Result<[u8; 6], String> {
    let bad = || format!("'{m}' is not a MAC address like 52:54:00:12:34:56");
    let parts: Vec<&str> = m.split(':').collect();
    if parts.len() != 6 {
        return Err(bad());
    }
    let mut mac = [0u8; 6];
    for (b, p) in mac.iter_mut().zip(parts) {
        if p.len() != 2 {
            return Err(bad());
        }
        *b = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    if mac[0] & 1 != 0 {
        return Err(format!("'{m}' is a multicast address"));
    }
    Ok(mac)
}

/// Which interrupt controller KVM emulates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum IrqchipChoice {
    /// In-kernel PIC, IOAPIC and LAPICs.
    #[default]
    Kernel,
    /// In-kernel LAPICs, IOAPIC emulated by the VMM.
    Split,
}

impl std::str::FromStr for IrqchipChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "kernel" => Ok(IrqchipChoice::Kernel),
            "split" => Ok(IrqchipChoice::Split),
            _ => Err(format!("'{s}' is not one of kernel, split")),
        }
    }
}

/// How KVM logs dirty pages for this VM (what `calc-dirty-rate` modes and,
/// later, migration use); chosen when the VM is created, as QEMU's
/// `-accel kvm,dirty-ring-size=N`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DirtyLogChoice {
    /// Dirty bitmaps (`KVM_GET_DIRTY_LOG`, with manual protect where the
    /// kernel has it): QMP mode `dirty-bitmap`.
    #[default]
    Bitmap,
    /// Per-vCPU dirty rings: QMP mode `dirty-ring`.
    Ring,
}

impl std::str::FromStr for DirtyLogChoice {
    type Err = String;

    /// Parses `bitmap` or `ring`.
    ///
    /// ```
    /// use kvmkit_vmm_reference::DirtyLogChoice;
    /// assert_eq!("ring".parse(), Ok(DirtyLogChoice::Ring));
    /// assert!("log".parse::<DirtyLogChoice>().is_err());
    /// ```
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "bitmap" => Ok(DirtyLogChoice::Bitmap),
            "ring" => Ok(DirtyLogChoice::Ring),
            _ => Err(format!("'{s}' is not one of bitmap, ring")),
        }
    }
}

/// Everything the VMM needs to build and run a VM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmmConfig {
    /// The kernel.
    pub kernel: KernelSource,
    /// An initramfs (cpio archive, possibly compressed).
    pub initramfs: Option<PathBuf>,
    /// The kernel command line.
    pub cmdline: String,
    /// Guest RAM in MiB.
    pub memory_mib: u64,
    /// Number of vCPUs.
    pub vcpus: u32,
    /// The serial console.
    pub serial: SerialConfig,
    /// virtio-blk disks.
    pub disks: Vec<DiskConfig>,
    /// virtio-net interfaces.
    pub nets: Vec<NetConfig>,
    /// The interrupt controller.
    pub irqchip: IrqchipChoice,
    /// Where to serve QMP (`--api-socket`), if anywhere.
    pub api_socket: Option<PathBuf>,
    /// How KVM logs dirty pages.
    pub dirty_log: DirtyLogChoice,
    /// Wait for an incoming migration here instead of booting.
    pub incoming: Option<crate::Incoming>,
    /// Restore this snapshot directory instead of booting.
    pub restore: Option<PathBuf>,
}

impl Default for VmmConfig {
    fn default() -> Self {
        VmmConfig {
            kernel: KernelSource::TestGuest,
            initramfs: None,
            cmdline: DEFAULT_CMDLINE.to_string(),
            memory_mib: DEFAULT_MEMORY_MIB,
            vcpus: 1,
            serial: SerialConfig::Stdio,
            disks: Vec::new(),
            nets: Vec::new(),
            irqchip: IrqchipChoice::Kernel,
            api_socket: None,
            dirty_log: DirtyLogChoice::Bitmap,
            incoming: None,
            restore: None,
        }
    }
}
