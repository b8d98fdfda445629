# Per one-way trip in an ftrace of trace.sh: from the sender's post (write system call) to the
# receive completion it causes (the first rxe_cq_post after rxe_rcv in the sender's context, as
# rxe processes the packet there), and from that completion to the receiver's next post.
import sys, re, statistics
for f in sys.argv[1:]:
    ev = []
    for line in open(f):
        m = re.match(r'\s*(\S+)-(\d+)\s+\[(\d+)\]\s+\S+\s+([\d.]+): (\S+)', line)
        if not m: continue
        comm, pid, cpu, t, e = m.groups()
        if comm not in ('vpp', 'bpp'): continue
        kind = 'enter' if e.startswith('sys_write(') else 'exit' if e == 'sys_write' else e.rstrip(':')
        ev.append((float(t) * 1e6, int(pid), kind))
    ev.sort()
    d1, d2, sc = [], [], []
    i = 0
    n = len(ev)
    while i < n:
        t0, p, k = ev[i]
        if k != 'enter': i += 1; continue
        # next rcv in p's context, then next cqpost in p's context
        j = i + 1
        while j < n and not (ev[j][1] == p and ev[j][2] == 'rcv'): j += 1
        if j >= n: break
        k2 = j + 1
        while k2 < n and not (ev[k2][1] == p and ev[k2][2] == 'cqpost'): k2 += 1
        if k2 >= n: break
        t1 = ev[k2][0]
        m2 = k2 + 1
        while m2 < n and not (ev[m2][1] != p and ev[m2][2] == 'enter'): m2 += 1
        if m2 >= n: break
        t2 = ev[m2][0]
        d1.append(t1 - t0); d2.append(t2 - t1)
        i = m2
    print(f, len(d1), 'post->cqpost med %.1f' % statistics.median(d1), 'cqpost->next post med %.1f' % statistics.median(d2),
          'p90 %.1f %.1f' % (sorted(d1)[len(d1)*9//10], sorted(d2)[len(d2)*9//10]))
