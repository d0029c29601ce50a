//! `vmm-reference`: parse the command line, build the VM, run it, map the end
//! to an exit status. All logic is in the library.

use kvmkit_vmm_reference::{parse_command_line, qmp, Invocation, QmpCommand, Vmm, PC_NAME};
use std::process::ExitCode;

/// `vmm-reference qmp PATH COMMAND [JSON-ARGS]`: 0 and the result on
/// stdout, 1 and the error on stderr, 2 for arguments that are not a JSON
/// object. `migrate` waits for the migration's end, showing its progress on
/// stderr, and exits 0 only if it completed.
fn qmp_client(q: &QmpCommand) -> ExitCode {
    let arguments = match q.arguments.as_deref().map(qmp::parse_arguments).transpose() {
        Ok(a) => a,
        Err(m) => {
            eprintln!("vmm-reference: {m}");
            return ExitCode::from(2);
        }
    };
    let result = if q.command == "migrate" {
        // Watched to its end, with a progress display on stderr: exit 0
        // only if it completed (see qmp::migrate).
        use std::io::IsTerminal;
        let stderr = std::io::stderr();
        let tty = stderr.is_terminal();
        qmp::migrate_with_progress(
            &q.socket,
            arguments,
            qmp::MIGRATE_POLL_INTERVAL,
            &mut stderr.lock(),
            tty,
        )
        .map(|_| serde_json::json!({}))
    } else {
        qmp::execute(&q.socket, &q.command, arguments)
    };
    match result {
        Ok(v) => {
            let text = serde_json::to_string_pretty(&v).unwrap_or_else(|_| v.to_string());
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("vmm-reference: {e}");
            ExitCode::from(1)
        }
    }
}

fn main() -> ExitCode {
    let config = match parse_command_line(std::env::args_os().skip(1)) {
        Ok(Invocation::Run(c)) => c,
        Ok(Invocation::Qmp(q)) => return qmp_client(&q),
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            // One line: clap's first line, without its usage block.
            let msg = e.to_string();
            let first = msg.lines().next().unwrap_or("invalid arguments");
            eprintln!(
                "vmm-reference: {} (see --help)",
                first.trim_start_matches("error: ")
            );
            return ExitCode::from(2);
        }
    };
    let result = Vmm::new(&config).and_then(Vmm::run);
    match result {
        Ok(exit) => {
            if let Some(m) = exit.message(PC_NAME) {
                eprintln!("vmm-reference: {m}");
            }
            ExitCode::from(u8::try_from(exit.code()).unwrap_or(1))
        }
        Err(e) => {
            kvmkit_vmm_reference::terminal::restore();
            eprintln!("vmm-reference: {e}");
            ExitCode::from(1)
        }
    }
}
