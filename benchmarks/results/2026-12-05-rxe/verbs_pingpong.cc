// The minimal verbs ping-pong of README.md (not built by CMake). In the rxe guest:
//   g++ -O2 -o vpp verbs_pingpong.cc -libverbs && ./vpp 5000 0
// rxe_a0 <-> rxe_b0, GID index 1; mode 0 busy polls, 1 yields every 16 polls, 3 rotates 8 slots.
// minimal verbs WRITE_WITH_IMM ping-pong between two processes (rxe_a0 <-> rxe_b0)
#include <arpa/inet.h>
#include <infiniband/verbs.h>
#include <sched.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
struct Info {
  uint32_t qpn;
  uint8_t gid[16];
  uint64_t addr;
  uint32_t rkey;
};
static void die(const char* m) {
  perror(m);
  exit(1);
}
int main(int argc, char** argv) {
  int iters = argc > 1 ? atoi(argv[1]) : 5000;
  int mode = argc > 2 ? atoi(argv[2]) : 0;  // 1: sched_yield in poll loop, 2: syscall getppid
  int p2c[2], c2p[2];
  if (pipe(p2c) || pipe(c2p)) die("pipe");
  pid_t pid = fork();
  bool parent = pid != 0;
  const char* name = parent ? "rxe_a0" : "rxe_b0";
  int n;
  ibv_device** l = ibv_get_device_list(&n);
  ibv_context* ctx = nullptr;
  for (int i = 0; i < n; ++i)
    if (!strcmp(ibv_get_device_name(l[i]), name)) ctx = ibv_open_device(l[i]);
  if (!ctx) die("open");
  ibv_pd* pd = ibv_alloc_pd(ctx);
  ibv_cq* cq = ibv_create_cq(ctx, 256, nullptr, nullptr, 0);
  static char buf[8 << 18];
  ibv_mr* mr = ibv_reg_mr(pd, buf, sizeof buf, IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE);
  ibv_qp_init_attr ia{};
  ia.send_cq = cq;
  ia.recv_cq = cq;
  ia.qp_type = IBV_QPT_RC;
  ia.cap.max_send_wr = 64;
  ia.cap.max_recv_wr = 64;
  ia.cap.max_send_sge = 1;
  ia.cap.max_recv_sge = 1;
  ia.cap.max_inline_data = 64;
  ibv_qp* qp = ibv_create_qp(pd, &ia);
  if (!qp) die("qp");
  Info me{};
  me.qpn = qp->qp_num;
  ibv_gid g;
  ibv_query_gid(ctx, 1, 1, &g);
  memcpy(me.gid, g.raw, 16);
  me.addr = (uint64_t)buf;
  me.rkey = mr->rkey;
  Info peer{};
  if (parent) {
    write(p2c[1], &me, sizeof me);
    read(c2p[0], &peer, sizeof peer);
  } else {
    write(c2p[1], &me, sizeof me);
    read(p2c[0], &peer, sizeof peer);
  }
  ibv_qp_attr a{};
  a.qp_state = IBV_QPS_INIT;
  a.port_num = 1;
  a.qp_access_flags = IBV_ACCESS_REMOTE_WRITE;
  if (ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS))
    die("init");
  a = {};
  a.qp_state = IBV_QPS_RTR;
  a.path_mtu = IBV_MTU_1024;
  a.dest_qp_num = peer.qpn;
  a.rq_psn = 0;
  a.max_dest_rd_atomic = 1;
  a.min_rnr_timer = 12;
  a.ah_attr.is_global = 1;
  memcpy(a.ah_attr.grh.dgid.raw, peer.gid, 16);
  a.ah_attr.grh.sgid_index = 1;
  a.ah_attr.grh.hop_limit = 64;
  a.ah_attr.port_num = 1;
  if (ibv_modify_qp(qp, &a,
                    IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN | IBV_QP_RQ_PSN |
                        IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER))
    die("rtr");
  a = {};
  a.qp_state = IBV_QPS_RTS;
  a.timeout = 18;
  a.retry_cnt = 7;
  a.rnr_retry = 7;
  a.sq_psn = 0;
  a.max_rd_atomic = 1;
  if (ibv_modify_qp(qp, &a,
                    IBV_QP_STATE | IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT | IBV_QP_RNR_RETRY |
                        IBV_QP_SQ_PSN | IBV_QP_MAX_QP_RD_ATOMIC))
    die("rts");
  for (int i = 0; i < 32; ++i) {
    ibv_recv_wr rw{}, *bad;
    rw.wr_id = 1;
    ibv_post_recv(qp, &rw, &bad);
  }
  char x;
  if (parent) {
    write(p2c[1], &x, 1);
    read(c2p[0], &x, 1);
  } else {
    read(p2c[0], &x, 1);
    write(c2p[1], &x, 1);
  }
  double postNs = 0;
  static double dsum = 0;
  static long dn = 0;
  auto send = [&](int i) {
    ibv_sge s{};
    s.addr = (uint64_t)buf;
    s.length = 48;
    s.lkey = mr->lkey;
    ibv_send_wr w{}, *bad;
    w.wr_id = 2;
    w.opcode = IBV_WR_RDMA_WRITE_WITH_IMM;
    w.send_flags = IBV_SEND_SIGNALED | IBV_SEND_INLINE;
    w.imm_data = htonl(i);
    w.sg_list = &s;
    w.num_sge = 1;
    w.wr.rdma.remote_addr = peer.addr + (mode == 3 ? (i % 8) * 262144 : 4096);
    {
      timespec t;
      clock_gettime(CLOCK_MONOTONIC, &t);
      *(uint64_t*)buf = t.tv_sec * 1000000000ull + t.tv_nsec;
    }
    w.wr.rdma.rkey = peer.rkey;
    auto a0 = std::chrono::steady_clock::now();
    if (ibv_post_send(qp, &w, &bad)) die("post");
    postNs +=
        std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - a0).count();
  };
  auto waitRecv = [&]() {
    for (unsigned k = 0;; ++k) {
      ibv_wc wc[8];
      int m = ibv_poll_cq(cq, 8, wc);
      bool got = false;
      for (int j = 0; j < m; ++j) {
        if (wc[j].status) {
          fprintf(stderr, "wc %d\n", wc[j].status);
          exit(1);
        }
        if (wc[j].wr_id == 1) {
          got = true;
          {
            timespec t;
            clock_gettime(CLOCK_MONOTONIC, &t);
            uint64_t now = t.tv_sec * 1000000000ull + t.tv_nsec;
            uint64_t sent =
                *(uint64_t*)(buf + (mode == 3 ? (ntohl(wc[j].imm_data) % 8) * 262144 : 4096));
            dsum += now - sent;
            dn++;
          }
          ibv_recv_wr rw{}, *bad;
          rw.wr_id = 1;
          ibv_post_recv(qp, &rw, &bad);
        }
      }
      if (got) return;
      if (mode == 1 && (k & 15) == 15) sched_yield();
      if (mode == 2 && (k & 7) == 7) getppid();
    }
  };
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < iters; ++i) {
    if (parent) {
      send(i);
      waitRecv();
    } else {
      waitRecv();
      send(i);
    }
  }
  auto t1 = std::chrono::steady_clock::now();
  if (parent) {
    printf("mode %d deliver %.1f post %.1f us one-way %.1f us\n", mode, dsum / dn / 1000,
           postNs / iters / 1000,
           std::chrono::duration<double, std::micro>(t1 - t0).count() / iters / 2);
    wait(nullptr);
  }
  return 0;
}
