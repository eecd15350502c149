//! Runs one operation N times, for instruction counting under callgrind
//! (`scripts/callgrind.sh`): the count for N runs minus the count for 0
//! runs, divided by N, is the operation's cost with the program's startup
//! and setup cancelled out.
//!
//! ```text
//! cyclecount OP N     OP: typed | typed-map-unmap | typed-identity-bus | hand | peer | bounce:BYTES | memcpy:BYTES
//!                     iova-dmacap | iova-first-fit (one alloc + free, 1K live)
//!                     iommu-unmap | iommu-unmap-walk (unmap + map again, 1K live)
//!                     (x86_64: nc-one | nc-batch | nc-sg | nc-raw:BYTES, one cycle of
//!                     64 buffers on the non-coherent backend with `clflush`)
//! cyclecount sizes    handle sizes over Box<[u8]> (target 6)
//! ```

use std::hint::black_box;
use std::process::ExitCode;

use dmacap_benches::bounce::{bounce_cycle, bounce_device, cpus, memcpy_cycle, page_buffer};
use dmacap_benches::peer::{peer_cycle, peer_device};
use dmacap_benches::{
    HandDevice, bytes, coherent_device, hand_cycle, identity_bus_device, sizes, typed_cycle,
    typed_map_unmap,
};

/// Bytes of the buffer in the cycles of targets 1 and 2.
const CYCLE_BYTES: usize = 64;

fn usage() -> ExitCode {
    eprintln!(
        "usage: cyclecount OP N  (OP: typed | typed-map-unmap | typed-identity-bus | hand | peer | bounce:BYTES | memcpy:BYTES)\n       cyclecount sizes"
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("sizes") {
        for (name, size) in sizes::table() {
            println!("{size:>4} B  {name}");
        }
        return ExitCode::SUCCESS;
    }
    let [op, n] = args.as_slice() else {
        return usage();
    };
    let Ok(n) = n.parse::<u64>() else {
        return usage();
    };
    let (op, arg) = op.split_once(':').unwrap_or((op, ""));
    let size = arg.parse::<usize>().unwrap_or(0);
    match op {
        "typed" | "typed-map-unmap" => {
            let dev = coherent_device();
            let dev = black_box(&dev);
            let mut buf = bytes(CYCLE_BYTES, 1);
            if op == "typed" {
                for _ in 0..n {
                    buf = typed_cycle(dev, black_box(buf));
                }
            } else {
                for _ in 0..n {
                    buf = typed_map_unmap(dev, black_box(buf));
                }
            }
            black_box(buf);
        }
        "typed-identity-bus" => {
            let dev = identity_bus_device();
            let dev = black_box(&dev);
            let mut buf = bytes(CYCLE_BYTES, 1);
            for _ in 0..n {
                buf = typed_cycle(dev, black_box(buf));
            }
            black_box(buf);
        }
        "hand" => {
            let dev = HandDevice::identity();
            let dev = black_box(&dev);
            let mut buf = bytes(CYCLE_BYTES, 1);
            for _ in 0..n {
                buf = hand_cycle(dev, black_box(buf));
            }
            black_box(buf);
        }
        "peer" => {
            let dev = peer_device();
            let dev = black_box(&dev);
            let mut buf = bytes(CYCLE_BYTES, 1);
            for _ in 0..n {
                peer_cycle(dev, black_box(&mut buf[..]));
            }
            black_box(buf);
        }
        "bounce" if size > 0 => {
            let dev = bounce_device(cpus());
            let dev = black_box(&dev);
            let mut buf = page_buffer(size);
            for _ in 0..n {
                buf = bounce_cycle(dev, black_box(buf));
            }
            black_box(buf);
        }
        "memcpy" if size > 0 => {
            let buf = page_buffer(size);
            let slot = page_buffer(size);
            for _ in 0..n {
                memcpy_cycle(black_box(&mut buf[..]), black_box(&mut slot[..]));
            }
        }
        "iova-dmacap" | "iova-first-fit" => {
            use dmacap_benches::iova;
            let ours = iova::dmacap_allocator();
            let _held = iova::dmacap_live(&ours, 1 << 10);
            let base = iova::FirstFit::new(iova::BASE, iova::LIMIT);
            let _base_held = iova::first_fit_live(&base, 1 << 10);
            for _ in 0..n {
                if op == "iova-dmacap" {
                    iova::dmacap_pair(black_box(&ours));
                } else {
                    iova::first_fit_pair(black_box(&base));
                }
            }
        }
        "iommu-unmap" | "iommu-unmap-walk" => {
            use dmacap_benches::iommu;
            let dev = iommu::iommu_device();
            let live = 1 << 10;
            let mut maps = iommu::live(&dev, live);
            let mut i = 0;
            for _ in 0..n {
                i = iommu::next(i, live);
                iommu::remap(&dev, &mut maps[i], op == "iommu-unmap-walk");
            }
            iommu::teardown(maps);
        }
        #[cfg(target_arch = "x86_64")]
        "nc-one" | "nc-batch" | "nc-sg" | "nc-raw" if size > 0 => {
            use dmacap::arch::x86_64::{X86CacheOps, X86Flush};
            use dmacap_benches::x86;
            // `clflush` everywhere: callgrind decodes it, not `clwb` or
            // `clflushopt`. One instruction per line either way.
            let ops = X86CacheOps::with_flavor(X86Flush::Clflush).expect("clflush");
            let dev = x86::nc_device_with(ops);
            let dev = black_box(&dev);
            let raw = x86::RawOps {
                clean: X86Flush::Clflush,
                invalidate: X86Flush::Clflush,
            };
            let mut bufs = x86::buffers(64, size);
            for _ in 0..n {
                match op {
                    "nc-one" => x86::one_by_one(dev, &mut bufs),
                    "nc-batch" => x86::batched(dev, &mut bufs),
                    "nc-sg" => x86::scatter_gather(dev, &mut bufs),
                    _ => x86::raw_limit(raw, &bufs),
                }
            }
            black_box(bufs);
        }
        _ => return usage(),
    }
    ExitCode::SUCCESS
}
