#!/bin/sh
# ftrace of the 8 B ping-pong in the rxe guest: the ibv_post_send system calls (write on the
# uverbs fd) and kprobes on rxe_rcv and rxe_cq_post, for the minimal verbs program (vpp, built
# from ../2026-12-05-rxe/verbs_pingpong.cc) and braid (bpp, built from pingpong.cc here).
# Run inside the guest, from the repository root:
#   tools/rxe-vm --out /tmp/tr -- env OUT=/tmp/tr BIN=/path/to/bins sh benchmarks/results/2026-12-06-rxe/trace.sh
#   python3 benchmarks/results/2026-12-06-rxe/trace_parse.py /tmp/tr/tr_vpp.txt /tmp/tr/tr_bpp.txt
O=${OUT:-/tmp}
export BRAID_TRANSPORTS=ib BRAID_IB_HCA==rxe_a0,rxe_b0 BRAID_SPIN_US=20000
T=/sys/kernel/tracing
mount -t tracefs nodev $T 2>/dev/null
echo 'p:kprobes/cqpost rdma_rxe:rxe_cq_post' >> $T/kprobe_events || echo fail1
echo 'p:kprobes/rcv rdma_rxe:rxe_rcv' >> $T/kprobe_events || echo fail2
echo 65536 > $T/buffer_size_kb
for p in vpp bpp; do
echo > $T/trace
for e in syscalls/sys_enter_write syscalls/sys_exit_write kprobes/cqpost kprobes/rcv; do echo 1 > $T/events/$e/enable; done
${BIN:-build/exp}/$p 3000
echo 0 > $T/tracing_on
cat $T/trace > $O/tr_$p.txt
echo 1 > $T/tracing_on
for e in syscalls/sys_enter_write syscalls/sys_exit_write kprobes/cqpost kprobes/rcv; do echo 0 > $T/events/$e/enable; done
done
