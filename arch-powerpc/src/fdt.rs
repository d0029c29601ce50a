//! The flattened device tree of a pseries (PAPR) guest, built with vm-fdt.
//!
//! Node and property names follow what QEMU's spapr machine emits and Linux's
//! pseries platform reads: `/memory@0`, `/cpus/PowerPC,POWER9@N`, the XICS
//! presentation controller `/interrupt-controller`, `/vdevice/vty@30000000`
//! (`hvterm1`, the console of [`crate::PaprIo`]), `/rtas` and `/chosen`.

use crate::{Error, Result, VTY_REG};
use vm_fdt::FdtWriter;

/// The phandle of the XICS node.
pub const XICS_PHANDLE: u32 = 0x1111;

/// The `ibm,hypertas-functions` this crate's pseries advertises: the
/// hypercall sets KVM provides (page table, terminal, interrupts, SPLPAR,
/// …); the guest only uses the terminal ones with userspace.
pub const HYPERTAS_FUNCTIONS: &[&str] = &[
    "hcall-pft",
    "hcall-term",
    "hcall-dabr",
    "hcall-interrupt",
    "hcall-tce",
    "hcall-vio",
    "hcall-splpar",
    "hcall-bulk",
    "hcall-set-mode",
];

/// An instantiated RTAS: the entry code ([`crate::write_rtas_blob`]) at
/// `base`, and the services the guest may call by token.
///
/// ```
/// use kvmkit_arch_powerpc::{build_pseries_fdt, FdtConfig, RtasConfig};
/// let rtas = RtasConfig { base: 0x0ff0_0000, tokens: vec![("power-off".into(), 0x2001)] };
/// assert!(build_pseries_fdt(&FdtConfig { rtas: Some(rtas), ..FdtConfig::default() }).is_ok());
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RtasConfig {
    /// `linux,rtas-base` and `linux,rtas-entry`.
    pub base: u64,
    /// `(service, token)`, e.g. `("ibm,set-xive", 0x2000)`: properties of
    /// `/rtas`. Define the XICS ones in KVM with
    /// [`crate::PpcVm::define_rtas_token`]; the rest reach the VMM as
    /// `H_RTAS` hypercalls.
    pub tokens: Vec<(String, u32)>,
}

/// What [`build_pseries_fdt`] describes.
///
/// ```
/// let c = kvmkit_arch_powerpc::FdtConfig::default();
/// assert_eq!((c.vcpus, c.cpu_model.as_str(), c.vty_reg), (1, "PowerPC,POWER9", 0x3000_0000));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FdtConfig {
    /// Guest RAM from address 0, in bytes (`/memory@0`).
    pub mem_size: u64,
    /// vCPUs: ids and interrupt server numbers `0..vcpus`.
    pub vcpus: u32,
    /// The CPU node name before `@N`.
    pub cpu_model: String,
    /// `cpu-version` (the PVR) of each CPU, when known.
    pub pvr: Option<u32>,
    /// `timebase-frequency` in Hz (512 MHz on POWER8/9/10).
    pub timebase_frequency: u32,
    /// `clock-frequency` in Hz.
    pub clock_frequency: u32,
    /// log2 of the hash page table size (`ibm,pft-size`): 24 is KVM-HV's
    /// default (16 MiB).
    pub hpt_order: u32,
    /// The kernel command line (`/chosen/bootargs`).
    pub bootargs: String,
    /// The initrd's guest physical `(start, end)`.
    pub initrd: Option<(u64, u64)>,
    /// The console's unit address (`/vdevice/vty@…`, its `reg`).
    pub vty_reg: u64,
    /// Interrupt servers of the XICS node (`ibm,interrupt-server-ranges`);
    /// 0 leaves the node out (no in-kernel irqchip).
    pub xics_servers: u32,
    /// An instantiated RTAS, if the VMM provides one.
    pub rtas: Option<RtasConfig>,
}

impl Default for FdtConfig {
    fn default() -> Self {
        FdtConfig {
            mem_size: 256 << 20,
            vcpus: 1,
            cpu_model: "PowerPC,POWER9".into(),
            pvr: None,
            timebase_frequency: 512_000_000,
            clock_frequency: 1_000_000_000,
            hpt_order: 24,
            bootargs: String::new(),
            initrd: None,
            vty_reg: VTY_REG,
            xics_servers: 1,
            rtas: None,
        }
    }
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_string()).collect()
}

/// Builds the pseries device tree for `config`.
///
/// ```
/// use kvmkit_arch_powerpc::{build_pseries_fdt, FdtConfig};
/// let dtb = build_pseries_fdt(&FdtConfig {
///     vcpus: 2,
///     bootargs: "console=hvc0".into(),
///     ..FdtConfig::default()
/// })
/// .unwrap();
/// assert_eq!(dtb[..4], [0xd0, 0x0d, 0xfe, 0xed]); // FDT magic
/// ```
pub fn build_pseries_fdt(config: &FdtConfig) -> Result<Vec<u8>> {
    let cell = |what: &str, v: u64| {
        u32::try_from(v)
            .map_err(|_| Error::FdtConfig(format!("{what} {v:#x} does not fit one 32-bit cell")))
    };
    let vty = cell("the vty unit address", config.vty_reg)?;
    let rtas_base = match &config.rtas {
        Some(r) => {
            let mut seen = std::collections::BTreeSet::new();
            for (name, _) in &r.tokens {
                if RTAS_FIXED.contains(&name.as_str()) || !seen.insert(name.as_str()) {
                    return Err(Error::FdtConfig(format!(
                        "RTAS token property {name} is repeated or reserved"
                    )));
                }
            }
            Some(cell("the RTAS base", r.base)?)
        }
        None => None,
    };
    build(config, vty, rtas_base).map_err(Error::Fdt)
}

/// Properties of `/rtas` this crate writes itself.
const RTAS_FIXED: &[&str] = &[
    "ibm,hypertas-functions",
    "linux,rtas-base",
    "linux,rtas-entry",
    "rtas-size",
];

fn build(c: &FdtConfig, vty_reg: u32, rtas_base: Option<u32>) -> Result<Vec<u8>, vm_fdt::Error> {
    let vty_path = format!("/vdevice/vty@{:x}", c.vty_reg);
    let mut w = FdtWriter::new()?;
    w.set_boot_cpuid_phys(0);
    let root = w.begin_node("")?;
    w.property_string("compatible", "qemu,pseries")?;
    w.property_string("model", "IBM pSeries (kvmkit)")?;
    w.property_string("device_type", "chrp")?;
    w.property_u32("#address-cells", 2)?;
    w.property_u32("#size-cells", 2)?;

    let chosen = w.begin_node("chosen")?;
    w.property_string("bootargs", &c.bootargs)?;
    if let Some((start, end)) = c.initrd {
        w.property_u64("linux,initrd-start", start)?;
        w.property_u64("linux,initrd-end", end)?;
    }
    w.property_string("stdout-path", &vty_path)?;
    w.property_string("linux,stdout-path", &vty_path)?;
    w.end_node(chosen)?;

    let memory = w.begin_node("memory@0")?;
    w.property_string("device_type", "memory")?;
    w.property_array_u64("reg", &[0, c.mem_size])?;
    w.end_node(memory)?;

    let cpus = w.begin_node("cpus")?;
    w.property_u32("#address-cells", 1)?;
    w.property_u32("#size-cells", 0)?;
    for id in 0..c.vcpus {
        let cpu = w.begin_node(&format!("{}@{id:x}", c.cpu_model))?;
        w.property_string("device_type", "cpu")?;
        w.property_u32("reg", id)?;
        if let Some(pvr) = c.pvr {
            w.property_u32("cpu-version", pvr)?;
        }
        w.property_u32("clock-frequency", c.clock_frequency)?;
        w.property_u32("timebase-frequency", c.timebase_frequency)?;
        w.property_u32("d-cache-block-size", 128)?;
        w.property_u32("i-cache-block-size", 128)?;
        w.property_u32("ibm,slb-size", 32)?;
        w.property_array_u32("ibm,pft-size", &[0, c.hpt_order])?;
        w.property_array_u32("ibm,ppc-interrupt-server#s", &[id])?;
        w.property_null("64-bit")?;
        w.property_string("status", "okay")?;
        w.end_node(cpu)?;
    }
    w.end_node(cpus)?;

    if c.xics_servers > 0 {
        let ic = w.begin_node("interrupt-controller")?;
        w.property_string("device_type", "PowerPC-External-Interrupt-Presentation")?;
        w.property_string("compatible", "IBM,ppc-xicp")?;
        w.property_null("interrupt-controller")?;
        w.property_array_u32("ibm,interrupt-server-ranges", &[0, c.xics_servers])?;
        w.property_u32("#address-cells", 0)?;
        w.property_u32("#interrupt-cells", 2)?;
        w.property_u32("linux,phandle", XICS_PHANDLE)?;
        w.property_phandle(XICS_PHANDLE)?;
        w.end_node(ic)?;
    }

    let vdevice = w.begin_node("vdevice")?;
    w.property_string("device_type", "vdevice")?;
    w.property_string("compatible", "IBM,vdevice")?;
    w.property_u32("#address-cells", 1)?;
    w.property_u32("#size-cells", 0)?;
    w.property_u32("#interrupt-cells", 2)?;
    w.property_null("interrupt-controller")?;
    let vty = w.begin_node(&format!("vty@{:x}", c.vty_reg))?;
    w.property_u32("reg", vty_reg)?;
    w.property_string("device_type", "serial")?;
    w.property_string("compatible", "hvterm1")?;
    w.end_node(vty)?;
    w.end_node(vdevice)?;

    let rtas = w.begin_node("rtas")?;
    w.property_string_list("ibm,hypertas-functions", strings(HYPERTAS_FUNCTIONS))?;
    if let (Some(r), Some(base)) = (&c.rtas, rtas_base) {
        w.property_u32("linux,rtas-base", base)?;
        w.property_u32("linux,rtas-entry", base)?;
        w.property_u32(
            "rtas-size",
            u32::try_from(crate::RTAS_BLOB.len()).unwrap_or(0),
        )?;
        for (name, token) in &r.tokens {
            w.property_u32(name, *token)?;
        }
    }
    w.end_node(rtas)?;

    w.end_node(root)?;
    w.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_with_every_option() {
        let c = FdtConfig {
            vcpus: 4,
            pvr: Some(0x004e_1202),
            bootargs: "console=hvc0".into(),
            initrd: Some((0x400_0000, 0x500_0000)),
            rtas: Some(RtasConfig {
                base: 0x0f00_0000,
                tokens: vec![("ibm,set-xive".into(), 0x2000)],
            }),
            ..FdtConfig::default()
        };
        let dtb = build_pseries_fdt(&c).unwrap();
        assert_eq!(dtb[..4], [0xd0, 0x0d, 0xfe, 0xed]);
        let s = String::from_utf8_lossy(&dtb);
        for needle in [
            "PowerPC,POWER9@3",
            "hvterm1",
            "IBM,ppc-xicp",
            "ibm,set-xive",
        ] {
            assert!(s.contains(needle), "{needle}");
        }
        let no_xics = build_pseries_fdt(&FdtConfig {
            xics_servers: 0,
            ..FdtConfig::default()
        })
        .unwrap();
        assert!(!String::from_utf8_lossy(&no_xics).contains("IBM,ppc-xicp"));
    }

    #[test]
    fn addresses_over_one_cell_are_refused() {
        let e = build_pseries_fdt(&FdtConfig {
            vty_reg: 1 << 32,
            ..FdtConfig::default()
        })
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid device tree configuration: the vty unit address 0x100000000 does not fit one 32-bit cell"
        );
        assert!(build_pseries_fdt(&FdtConfig {
            rtas: Some(RtasConfig {
                base: 1 << 40,
                tokens: vec![],
            }),
            ..FdtConfig::default()
        })
        .is_err());
        for tokens in [
            vec![("rtas-size".to_string(), 1)],
            vec![("power-off".to_string(), 1), ("power-off".to_string(), 2)],
        ] {
            let e = build_pseries_fdt(&FdtConfig {
                rtas: Some(RtasConfig { base: 0, tokens }),
                ..FdtConfig::default()
            })
            .unwrap_err();
            assert!(e.to_string().contains("repeated or reserved"), "{e}");
        }
        // What vm-fdt refuses is an error too, never a panic.
        let e = build_pseries_fdt(&FdtConfig {
            bootargs: "nul\0inside".into(),
            ..FdtConfig::default()
        })
        .unwrap_err();
        assert_eq!(e.to_string(), "cannot build the pseries device tree");
    }
}
