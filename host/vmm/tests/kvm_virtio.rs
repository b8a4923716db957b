//! A hand-made ring-0 guest on real KVM drives a virtio-mmio block device: it negotiates
//! features, sets up a queue whose descriptors it wrote itself, notifies, and prints the sector
//! it read and the request status on the serial port.
#![cfg(all(target_os = "linux", target_arch = "x86_64"))] // the VMM runs on x86_64 Linux only
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write as _;

use vm_memory::Bytes;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use kiln_vmm::vcpu::RunOutcome;
use kiln_vmm::virtio::block::Block;
use kiln_vmm::virtio::mmio::{reg, MmioTransport, MMIO_WINDOW};
use kiln_vmm::virtio::vsock::packet::{op, Header, HOST_CID, TYPE_STREAM};
use kiln_vmm::virtio::vsock::Vsock;
use kiln_vmm::virtio::Interrupt;

/// Below 2 GiB so a sign-extended disp32 reaches it.
const DEV: u32 = 0x1000_0000;
const DESC: u32 = 0x20000;
const AVAIL: u32 = 0x20100;
const USED: u32 = 0x20200;
const HDR: u32 = 0x21000;
const DATA: u32 = 0x22000;
const STATUS: u32 = 0x23000;

/// `mov dword [addr], v`: C7 04 25 disp32 imm32 (SIB with no base: absolute disp32).
fn mov32(addr: u32, v: u32) -> Vec<u8> {
    let mut c = vec![0xc7, 0x04, 0x25];
    c.extend(addr.to_le_bytes());
    c.extend(v.to_le_bytes());
    c
}

/// `mov qword [addr], v` for a sign-extended imm32: 48 C7 04 25 disp32 imm32.
fn mov64(addr: u32, v: u32) -> Vec<u8> {
    let mut c = vec![0x48];
    c.extend(mov32(addr, v));
    c
}

/// `mov word [addr], v`: 66 C7 04 25 disp32 imm16.
fn mov16(addr: u32, v: u16) -> Vec<u8> {
    let mut c = vec![0x66, 0xc7, 0x04, 0x25];
    c.extend(addr.to_le_bytes());
    c.extend(v.to_le_bytes());
    c
}

/// One split-queue descriptor written by the guest: addr (qword), len (dword), flags (word),
/// next (word).
fn descriptor(index: u32, addr: u32, len: u32, flags: u16, next: u16) -> Vec<u8> {
    let at = DESC + 16 * index;
    [mov64(at, addr), mov32(at + 8, len), mov16(at + 12, flags), mov16(at + 14, next)].concat()
}

#[test]
fn ring0_guest_reads_a_block_sector_through_virtio_mmio() {
    let Some(mut vm) = tiny_vm() else { return };
    let mut disk = tempfile::NamedTempFile::new().unwrap();
    let mut image = vec![0u8; 4096];
    image[512..517].copy_from_slice(b"hello");
    disk.write_all(&image).unwrap();
    let blk = Block::open(disk.path(), true, "tiny").unwrap();
    let transport = MmioTransport::new(Box::new(blk), vm.mem.clone(), Arc::new(Interrupt::new(None))).unwrap();
    let transport = Arc::new(Mutex::new(transport));
    vm.buses.mmio.insert(u64::from(DEV), MMIO_WINDOW, transport.clone()).unwrap();

    let r = |off: u64| DEV + off as u32;
    let mut code = Vec::new();
    // Status: ACKNOWLEDGE, DRIVER; accept VERSION_1 (feature bit 32); FEATURES_OK.
    code.extend(mov32(r(reg::STATUS), 1));
    code.extend(mov32(r(reg::STATUS), 3));
    code.extend(mov32(r(reg::DRIVER_FEATURES_SEL), 1));
    code.extend(mov32(r(reg::DRIVER_FEATURES), 1));
    code.extend(mov32(r(reg::STATUS), 11));
    // Queue 0: 8 entries at DESC / AVAIL / USED, ready.
    code.extend(mov32(r(reg::QUEUE_SEL), 0));
    code.extend(mov32(r(reg::QUEUE_NUM), 8));
    code.extend(mov32(r(reg::QUEUE_DESC_LOW), DESC));
    code.extend(mov32(r(reg::QUEUE_DRIVER_LOW), AVAIL));
    code.extend(mov32(r(reg::QUEUE_DEVICE_LOW), USED));
    code.extend(mov32(r(reg::QUEUE_READY), 1));
    code.extend(mov32(r(reg::STATUS), 15)); // DRIVER_OK
    // Request: header {type IN, sector 1}, 512-byte data buffer, status byte.
    code.extend(mov32(HDR, 0));
    code.extend(mov64(HDR + 8, 1));
    code.extend(descriptor(0, HDR, 16, 1, 1)); // NEXT
    code.extend(descriptor(1, DATA, 512, 3, 2)); // NEXT | WRITE
    code.extend(descriptor(2, STATUS, 1, 2, 0)); // WRITE
    code.extend(mov16(AVAIL + 4, 0)); // ring[0] = head 0
    code.extend(mov16(AVAIL + 2, 1)); // idx = 1
    code.extend(mov32(r(reg::QUEUE_NOTIFY), 0));
    // Print 5 bytes of the data buffer, then '0' + status:
    // BE imm32        mov esi, DATA
    // B9 05 00 00 00  mov ecx, 5
    // 66 BA F8 03     mov dx, 0x3f8
    // AC              lodsb
    // EE              out dx, al
    // FF C9           dec ecx
    // 75 FA           jnz lodsb (-6)
    // 8A 04 25 disp32 mov al, [STATUS]
    // 04 30           add al, '0'
    // EE              out dx, al
    // F4              hlt
    code.push(0xbe);
    code.extend(DATA.to_le_bytes());
    code.extend([0xb9, 5, 0, 0, 0, 0x66, 0xba, 0xf8, 0x03, 0xac, 0xee, 0xff, 0xc9, 0x75, 0xfa]);
    code.extend([0x8a, 0x04, 0x25]);
    code.extend(STATUS.to_le_bytes());
    code.extend([0x04, 0x30, 0xee, 0xf4]);

    vm.load(CODE_ADDR, &code);
    vm.enter_long_mode(CODE_ADDR, false);
    let (outcome, stats) = vm.run(Duration::from_secs(30)).expect("run");
    assert_eq!(outcome, RunOutcome::Halted);
    let t = transport.lock().unwrap();
    assert_eq!(t.last_error(), None);
    assert_eq!(vm.output(), "hello0", "sector 1 then status OK");
    eprintln!("virtio-blk guest: {} exits", stats.exits);
}

/// Guest code that sets queue `q` up: 8 entries at `base` (desc), `base+0x100` (avail),
/// `base+0x200` (used).
fn queue_setup(q: u32, base: u32) -> Vec<u8> {
    let r = |off: u64| DEV + off as u32;
    [
        mov32(r(reg::QUEUE_SEL), q),
        mov32(r(reg::QUEUE_NUM), 8),
        mov32(r(reg::QUEUE_DESC_LOW), base),
        mov32(r(reg::QUEUE_DRIVER_LOW), base + 0x100),
        mov32(r(reg::QUEUE_DEVICE_LOW), base + 0x200),
        mov32(r(reg::QUEUE_READY), 1),
    ]
    .concat()
}

/// A descriptor in the table at `table`.
fn desc_at(table: u32, index: u32, addr: u32, len: u32, flags: u16) -> Vec<u8> {
    let at = table + 16 * index;
    [mov64(at, addr), mov32(at + 8, len), mov16(at + 12, flags), mov16(at + 14, 0)].concat()
}

#[test]
fn ring0_guest_connects_over_vsock_to_a_host_unix_socket_with_ioeventfd_kicks() {
    const RXQ: u32 = 0x20000;
    const TXQ: u32 = 0x21000;
    const REQ: u32 = 0x30000;
    const RW: u32 = 0x31000;
    const RXBUF: u32 = 0x40000;
    let Some(mut vm) = tiny_vm() else { return };
    let dir = tempfile::tempdir().unwrap();
    let uds = dir.path().join("v.sock");
    let host = std::os::unix::net::UnixListener::bind(format!("{}_52", uds.display())).unwrap();
    let vsock = Vsock::new(3, &uds).unwrap();
    let transport = MmioTransport::new(Box::new(vsock), vm.mem.clone(), Arc::new(Interrupt::new(None))).unwrap();
    // Queue notifications go straight from KVM to the vsock worker, without a vCPU exit.
    for (fd, offset, value) in transport.ioeventfds() {
        vm.vm.register_ioeventfd(&fd, u64::from(DEV) + offset, value).expect("ioeventfd");
    }
    let transport = Arc::new(Mutex::new(transport));
    vm.buses.mmio.insert(u64::from(DEV), MMIO_WINDOW, transport.clone()).unwrap();

    // The guest's packets, as static data next to its code.
    let hdr = |op_: u16, len: u32| Header {
        src_cid: 3, dst_cid: HOST_CID, src_port: 1024, dst_port: 52, len, type_: TYPE_STREAM, op: op_, flags: 0,
        buf_alloc: 65536, fwd_cnt: 0,
    };
    vm.load(u64::from(REQ), &hdr(op::REQUEST, 0).to_bytes());
    let mut rw = hdr(op::RW, 5).to_bytes().to_vec();
    rw.extend(b"hello");
    vm.load(u64::from(RW), &rw);

    let r = |off: u64| DEV + off as u32;
    let mut code = Vec::new();
    code.extend(mov32(r(reg::STATUS), 1));
    code.extend(mov32(r(reg::STATUS), 3));
    code.extend(mov32(r(reg::DRIVER_FEATURES_SEL), 1));
    code.extend(mov32(r(reg::DRIVER_FEATURES), 1));
    code.extend(mov32(r(reg::STATUS), 11));
    code.extend(queue_setup(0, RXQ));
    code.extend(queue_setup(1, TXQ));
    code.extend(mov32(r(reg::STATUS), 15));
    // One 4 KiB rx buffer; notify queue 0.
    code.extend(desc_at(RXQ, 0, RXBUF, 4096, 2));
    code.extend(mov16(RXQ + 0x104, 0));
    code.extend(mov16(RXQ + 0x102, 1));
    code.extend(mov32(r(reg::QUEUE_NOTIFY), 0));
    // REQUEST and RW as two chains; notify queue 1.
    code.extend(desc_at(TXQ, 0, REQ, 44, 0));
    code.extend(desc_at(TXQ, 1, RW, 49, 0));
    code.extend(mov16(TXQ + 0x104, 0));
    code.extend(mov16(TXQ + 0x106, 1));
    code.extend(mov16(TXQ + 0x102, 2));
    code.extend(mov32(r(reg::QUEUE_NOTIFY), 1));
    // Wait for the device's answer in the rx used ring, print '0' + its op, halt:
    // 66 8B 04 25 disp32   mov ax, [RXQ+0x202]     (used idx)
    // 66 85 C0             test ax, ax
    // 74 F3                jz back (-13)
    // 8A 04 25 disp32      mov al, [RXBUF+30]      (op, low byte)
    // 04 30                add al, '0'
    // 66 BA F8 03          mov dx, 0x3f8
    // EE                   out dx, al
    // F4                   hlt
    code.extend([0x66, 0x8b, 0x04, 0x25]);
    code.extend((RXQ + 0x202).to_le_bytes());
    code.extend([0x66, 0x85, 0xc0, 0x74, 0xf3]);
    code.extend([0x8a, 0x04, 0x25]);
    code.extend((RXBUF + 30).to_le_bytes());
    code.extend([0x04, 0x30, 0x66, 0xba, 0xf8, 0x03, 0xee, 0xf4]);

    vm.load(CODE_ADDR, &code);
    vm.enter_long_mode(CODE_ADDR, false);
    let (outcome, stats) = vm.run(Duration::from_secs(30)).expect("run");
    assert_eq!(outcome, RunOutcome::Halted);
    assert_eq!(transport.lock().unwrap().last_error(), None);
    assert_eq!(vm.output(), "2", "the guest saw RESPONSE (op 2)");
    let (mut conn, _) = host.accept().unwrap();
    let mut buf = [0u8; 5];
    std::io::Read::read_exact(&mut conn, &mut buf).unwrap();
    assert_eq!(&buf, b"hello");
    // 18 register writes + 1 `out` + `hlt` exit; the 2 QueueNotify writes went to the vsock
    // worker's eventfds inside KVM (ioeventfd) without a vCPU exit.
    assert_eq!(stats.exits, 20, "queue notifications must not exit");
}

/// Guest -> host vsock throughput with a ring-3 guest (native speed even on nested PVM): the
/// guest queues one 64 KiB RW packet at a time, notifies through ioeventfd (no exit) and spins
/// on the used ring; a host thread reads the Unix socket. Prints MiB/s (debug builds understate
/// it: run with `--release` for the figure).
#[test]
fn ring3_guest_streams_to_the_host_over_vsock() {
    const TXQ: u32 = 0x21000;
    const REQ: u32 = 0x30000;
    const RW: u32 = 0x10_0000;
    const END: u32 = 0x1100_0000;
    const PAYLOAD: u32 = 64 * 1024;
    const PACKETS: u32 = 1024;
    let Some(mut vm) = tiny_vm() else { return };
    let dir = tempfile::tempdir().unwrap();
    let uds = dir.path().join("v.sock");
    let host = std::os::unix::net::UnixListener::bind(format!("{}_52", uds.display())).unwrap();
    let transport = MmioTransport::new(Box::new(Vsock::new(3, &uds).unwrap()), vm.mem.clone(), Arc::new(Interrupt::new(None))).unwrap();
    for (fd, offset, value) in transport.ioeventfds() {
        vm.vm.register_ioeventfd(&fd, u64::from(DEV) + offset, value).expect("ioeventfd");
    }
    vm.buses.mmio.insert(u64::from(DEV), MMIO_WINDOW, Arc::new(Mutex::new(transport))).unwrap();
    let hdr = |op_: u16, len: u32| Header {
        src_cid: 3, dst_cid: HOST_CID, src_port: 1024, dst_port: 52, len, type_: TYPE_STREAM, op: op_, flags: 0,
        buf_alloc: 65536, fwd_cnt: 0,
    };
    vm.load(u64::from(REQ), &hdr(op::REQUEST, 0).to_bytes());
    let mut rw = hdr(op::RW, PAYLOAD).to_bytes().to_vec();
    rw.extend(vec![0xa5u8; PAYLOAD as usize]);
    vm.load(u64::from(RW), &rw);

    let r = |off: u64| DEV + off as u32;
    let mut code = Vec::new();
    code.extend(mov32(r(reg::STATUS), 1));
    code.extend(mov32(r(reg::STATUS), 3));
    code.extend(mov32(r(reg::DRIVER_FEATURES_SEL), 1));
    code.extend(mov32(r(reg::DRIVER_FEATURES), 1));
    code.extend(mov32(r(reg::STATUS), 11));
    code.extend(queue_setup(1, TXQ));
    code.extend(mov32(r(reg::STATUS), 15));
    code.extend(desc_at(TXQ, 0, REQ, 44, 0));
    code.extend(desc_at(TXQ, 1, RW, 44 + PAYLOAD, 0));
    code.extend(mov16(TXQ + 0x104, 0)); // ring[0] = REQUEST
    code.extend(mov16(TXQ + 0x102, 1));
    code.extend(mov32(r(reg::QUEUE_NOTIFY), 1));
    // 41 B8 01 00 00 00        mov r8d, 1            (avail idx)
    // B9 imm32                 mov ecx, PACKETS
    code.extend([0x41, 0xb8, 1, 0, 0, 0, 0xb9]);
    code.extend(PACKETS.to_le_bytes());
    let top = code.len();
    // 44 89 C0                 mov eax, r8d
    // 83 E0 07                 and eax, 7
    // 66 C7 04 45 disp32 01 00 mov word [TXQ+0x104 + rax*2], 1   (ring[idx % 8] = desc 1)
    // 41 FF C0                 inc r8d
    // 66 44 89 04 25 disp32    mov [TXQ+0x102], r8w              (publish avail idx)
    // C7 04 25 disp32 imm32    mov dword [QueueNotify], 1        (ioeventfd: no exit)
    code.extend([0x44, 0x89, 0xc0, 0x83, 0xe0, 0x07, 0x66, 0xc7, 0x04, 0x45]);
    code.extend((TXQ + 0x104).to_le_bytes());
    code.extend([1, 0, 0x41, 0xff, 0xc0, 0x66, 0x44, 0x89, 0x04, 0x25]);
    code.extend((TXQ + 0x102).to_le_bytes());
    code.extend(mov32(r(reg::QUEUE_NOTIFY), 1));
    // wait: 66 8B 04 25 disp32 mov ax, [TXQ+0x202]   (used idx)
    //       66 44 39 C0        cmp ax, r8w
    //       75 F2              jne wait (-14)
    code.extend([0x66, 0x8b, 0x04, 0x25]);
    code.extend((TXQ + 0x202).to_le_bytes());
    code.extend([0x66, 0x44, 0x39, 0xc0, 0x75, 0xf2]);
    // FF C9 dec ecx ; 75 rel8 jnz top
    code.extend([0xff, 0xc9, 0x75]);
    let back = top as i64 - (code.len() as i64 + 1);
    code.push(i8::try_from(back).unwrap() as u8);
    // Done: a write to an unclaimed address ends the run (ring 3 cannot hlt).
    code.extend(mov32(END, 0));

    let total = u64::from(PACKETS) * u64::from(PAYLOAD);
    let reader = std::thread::spawn(move || {
        let (mut conn, _) = host.accept().unwrap();
        let mut buf = vec![0u8; 1 << 20];
        let mut got = 0u64;
        let mut first: Option<std::time::Instant> = None;
        while got < total {
            let n = std::io::Read::read(&mut conn, &mut buf).unwrap();
            assert!(n > 0, "connection closed after {got} bytes");
            first.get_or_insert_with(std::time::Instant::now);
            assert!(buf[..n].iter().all(|b| *b == 0xa5));
            got += n as u64;
        }
        first.map(|t| t.elapsed())
    });
    vm.load(CODE_ADDR, &code);
    vm.enter_long_mode(CODE_ADDR, true);
    let err = vm.run(Duration::from_secs(60)).expect_err("ends with the unclaimed write");
    assert!(matches!(err, kiln_vmm::vcpu::VcpuError::Unclaimed { addr, .. } if addr == u64::from(END)), "{err}");
    let elapsed = reader.join().unwrap().unwrap();
    eprintln!(
        "vsock guest->host: {} MiB in {elapsed:?} = {:.0} MiB/s (64 KiB packets, one in flight)",
        total >> 20,
        (total as f64 / 1048576.0) / elapsed.as_secs_f64()
    );
}

/// Host -> guest vsock throughput with a ring-3 guest: it connects (advertising a 4 GiB
/// receive buffer so it never has to send credit updates), keeps 8 rx buffers of 64 KiB
/// posted, and re-posts each as soon as it is used, until it has received everything.
#[test]
fn host_streams_to_a_ring3_guest_over_vsock() {
    const RXQ: u32 = 0x20000;
    const TXQ: u32 = 0x21000;
    const REQ: u32 = 0x30000;
    const BUFS: u32 = 0x10_0000;
    const END: u32 = 0x1100_0000;
    const TOTAL: u32 = 64 << 20;
    let Some(mut vm) = tiny_vm() else { return };
    let dir = tempfile::tempdir().unwrap();
    let uds = dir.path().join("v.sock");
    let host = std::os::unix::net::UnixListener::bind(format!("{}_52", uds.display())).unwrap();
    let transport = MmioTransport::new(Box::new(Vsock::new(3, &uds).unwrap()), vm.mem.clone(), Arc::new(Interrupt::new(None))).unwrap();
    for (fd, offset, value) in transport.ioeventfds() {
        vm.vm.register_ioeventfd(&fd, u64::from(DEV) + offset, value).expect("ioeventfd");
    }
    vm.buses.mmio.insert(u64::from(DEV), MMIO_WINDOW, Arc::new(Mutex::new(transport))).unwrap();
    let req = Header {
        src_cid: 3, dst_cid: HOST_CID, src_port: 1024, dst_port: 52, len: 0, type_: TYPE_STREAM, op: op::REQUEST, flags: 0,
        buf_alloc: u32::MAX, fwd_cnt: 0,
    };
    vm.load(u64::from(REQ), &req.to_bytes());

    let r = |off: u64| DEV + off as u32;
    let mut code = Vec::new();
    code.extend(mov32(r(reg::STATUS), 1));
    code.extend(mov32(r(reg::STATUS), 3));
    code.extend(mov32(r(reg::DRIVER_FEATURES_SEL), 1));
    code.extend(mov32(r(reg::DRIVER_FEATURES), 1));
    code.extend(mov32(r(reg::STATUS), 11));
    code.extend(queue_setup(0, RXQ));
    code.extend(queue_setup(1, TXQ));
    code.extend(mov32(r(reg::STATUS), 15));
    for i in 0..8u32 {
        code.extend(desc_at(RXQ, i, BUFS + i * 0x2_0000, 44 + 0x1_0000, 2));
        code.extend(mov16(RXQ + 0x104 + 2 * i, i as u16));
    }
    code.extend(mov16(RXQ + 0x102, 8));
    code.extend(mov32(r(reg::QUEUE_NOTIFY), 0));
    code.extend(desc_at(TXQ, 0, REQ, 44, 0));
    code.extend(mov16(TXQ + 0x104, 0));
    code.extend(mov16(TXQ + 0x102, 1));
    code.extend(mov32(r(reg::QUEUE_NOTIFY), 1));
    // 41 B8 00 00 00 00   mov r8d, 0     (next used entry to consume)
    // 41 B9 08 00 00 00   mov r9d, 8     (avail idx)
    // 45 31 D2            xor r10d, r10d (payload bytes received)
    code.extend([0x41, 0xb8, 0, 0, 0, 0, 0x41, 0xb9, 8, 0, 0, 0, 0x45, 0x31, 0xd2]);
    let top = code.len();
    // wait: 66 8B 04 25 disp32  mov ax, [RXQ+0x202]   (used idx)
    //       66 44 39 C0         cmp ax, r8w
    //       74 F2               je wait (-14)
    code.extend([0x66, 0x8b, 0x04, 0x25]);
    code.extend((RXQ + 0x202).to_le_bytes());
    code.extend([0x66, 0x44, 0x39, 0xc0, 0x74, 0xf2]);
    // 44 89 C0              mov eax, r8d
    // 83 E0 07              and eax, 7
    // 8B 34 C5 disp32       mov esi, [rax*8 + RXQ+0x204]   (used elem id)
    // 8B 14 C5 disp32       mov edx, [rax*8 + RXQ+0x208]   (used elem len)
    // 83 EA 2C              sub edx, 44
    // 49 01 D2              add r10, rdx
    // 41 FF C0              inc r8d
    code.extend([0x44, 0x89, 0xc0, 0x83, 0xe0, 0x07, 0x8b, 0x34, 0xc5]);
    code.extend((RXQ + 0x204).to_le_bytes());
    code.extend([0x8b, 0x14, 0xc5]);
    code.extend((RXQ + 0x208).to_le_bytes());
    code.extend([0x83, 0xea, 0x2c, 0x49, 0x01, 0xd2, 0x41, 0xff, 0xc0]);
    // Re-post buffer esi:
    // 44 89 C8              mov eax, r9d
    // 83 E0 07              and eax, 7
    // 66 89 34 45 disp32    mov [rax*2 + RXQ+0x104], si
    // 41 FF C1              inc r9d
    // 66 44 89 0C 25 disp32 mov [RXQ+0x102], r9w
    // C7 04 25 disp32 0     mov dword [QueueNotify], 0     (ioeventfd)
    code.extend([0x44, 0x89, 0xc8, 0x83, 0xe0, 0x07, 0x66, 0x89, 0x34, 0x45]);
    code.extend((RXQ + 0x104).to_le_bytes());
    code.extend([0x41, 0xff, 0xc1, 0x66, 0x44, 0x89, 0x0c, 0x25]);
    code.extend((RXQ + 0x102).to_le_bytes());
    code.extend(mov32(r(reg::QUEUE_NOTIFY), 0));
    // 49 81 FA imm32        cmp r10, TOTAL
    // 0F 82 rel32           jb top
    code.extend([0x49, 0x81, 0xfa]);
    code.extend(TOTAL.to_le_bytes());
    code.extend([0x0f, 0x82]);
    let back = top as i64 - (code.len() as i64 + 4);
    code.extend(i32::try_from(back).unwrap().to_le_bytes());
    code.extend(mov32(END, 0));

    let writer = std::thread::spawn(move || {
        let (mut conn, _) = host.accept().unwrap();
        let chunk = vec![0x5au8; 1 << 20];
        let start = std::time::Instant::now();
        for _ in 0..(TOTAL >> 20) {
            std::io::Write::write_all(&mut conn, &chunk).unwrap();
        }
        (start, conn)
    });
    vm.load(CODE_ADDR, &code);
    vm.enter_long_mode(CODE_ADDR, true);
    let err = vm.run(Duration::from_secs(60)).expect_err("ends with the unclaimed write");
    let end = std::time::Instant::now();
    assert!(matches!(err, kiln_vmm::vcpu::VcpuError::Unclaimed { addr, .. } if addr == u64::from(END)), "{err}");
    let (start, _conn) = writer.join().unwrap();
    let mut sample = [0u8; 16];
    vm.mem.read_slice(&mut sample, vm_memory::GuestAddress(u64::from(BUFS) + 44)).unwrap();
    assert_eq!(sample, [0x5a; 16]);
    let elapsed = end - start;
    eprintln!(
        "vsock host->guest: {} MiB in {elapsed:?} = {:.0} MiB/s (8 rx buffers of 64 KiB)",
        TOTAL >> 20,
        f64::from(TOTAL >> 20) / elapsed.as_secs_f64()
    );
}
