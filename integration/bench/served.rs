//! `bench-served`: the stopwatch of `integration/bench/apps-vm.sh`, run in
//! the QEMU guest. It starts a command (an app install, or `podman run -d`)
//! and, from that moment, tries the app's port every 20 ms until the page
//! it serves contains a given text: that is the "served" time; the "exit"
//! time is when the command returned. Not part of hostctl.
//!
//! It measures in one process, without a fork per try: the guest's two
//! vCPUs share one host thread (`-accel tcg,thread=single`), so a poller
//! that starts processes (a shell's `date`, `awk`, a subshell per try) slows
//! the command it measures, and a command that starts many processes more
//! than one that starts few.
//!
//!   bench-served ADDR:PORT TEXT LIMIT_SECS OUTPUT -- COMMAND [ARG...]
//!
//! Prints `served=S exit=E rc=R start=T` (seconds with milliseconds;
//! `never` when the page did not come within LIMIT_SECS or before the
//! command failed; T is the command's start in seconds since the epoch, for
//! lining up its own timestamped log lines).
//! The command's stdout and stderr go to OUTPUT.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(dash) = args.iter().position(|a| a == "--") else { return usage() };
    let [addr, text, limit, output] = &args[..dash] else { return usage() };
    let command = &args[dash + 1..];
    let (Ok(addr), Ok(limit), Some(program)) = (addr.parse::<SocketAddr>(), limit.parse::<u64>(), command.first())
    else {
        return usage();
    };
    let out = match std::fs::File::create(output) {
        Ok(f) => f,
        Err(e) => return fail(&format!("{output}: {e}")),
    };
    let err = match out.try_clone() {
        Ok(f) => f,
        Err(e) => return fail(&format!("{output}: {e}")),
    };
    let limit = Duration::from_secs(limit);
    let t0 = Instant::now();
    let start = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let mut child = match Command::new(program).args(&command[1..]).stdin(Stdio::null()).stdout(out).stderr(err).spawn()
    {
        Ok(c) => c,
        Err(e) => return fail(&format!("{program}: {e}")),
    };
    let (mut served, mut exited) = (None, None);
    while served.is_none() && t0.elapsed() < limit {
        if serves(addr, text) {
            served = Some(t0.elapsed());
            break;
        }
        if exited.is_none() {
            match child.try_wait() {
                Ok(Some(status)) => {
                    exited = Some((t0.elapsed(), status));
                    if !status.success() {
                        break;
                    }
                }
                Ok(None) => {}
                Err(e) => return fail(&format!("waiting for {program}: {e}")),
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let (exit, status) = match exited {
        Some(e) => e,
        None => match child.wait() {
            Ok(status) => (t0.elapsed(), status),
            Err(e) => return fail(&format!("waiting for {program}: {e}")),
        },
    };
    let served = served.map_or("never".to_string(), |s| format!("{:.3}", s.as_secs_f64()));
    let rc = status.code().map_or("signal".to_string(), |c| c.to_string());
    println!("served={served} exit={:.3} rc={rc} start={:.6}", exit.as_secs_f64(), start.as_secs_f64());
    ExitCode::SUCCESS
}

/// Whether `addr` answers a plain HTTP GET with a page containing `text`.
fn serves(addr: SocketAddr, text: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else { return false };
    let timeout = Some(Duration::from_secs(2));
    if stream.set_read_timeout(timeout).is_err() || stream.set_write_timeout(timeout).is_err() {
        return false;
    }
    if stream.write_all(b"GET /index.html HTTP/1.0\r\n\r\n").is_err() {
        return false;
    }
    let mut page = Vec::new();
    // A reset or a timeout part-way still leaves what was read to look at.
    let _ = stream.read_to_end(&mut page);
    String::from_utf8_lossy(&page).contains(text)
}

fn usage() -> ExitCode {
    fail("usage: bench-served ADDR:PORT TEXT LIMIT_SECS OUTPUT -- COMMAND [ARG...]")
}

fn fail(message: &str) -> ExitCode {
    eprintln!("bench-served: {message}");
    ExitCode::from(2)
}
