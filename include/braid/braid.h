/* braid: a collective communication library with an NCCL-shaped C API.
 *
 * Every function returns a braidResult_t and never throws. Arguments are checked before
 * anything runs: a bad argument returns braidInvalidArgument (or braidInvalidUsage) with a
 * sentence available from braidGetLastError, and changes nothing.
 *
 * Threads: every function may be called from any thread. Collectives (and braidCommSplit)
 * on one communicator are matched with the peers' by call order, so they must be made in
 * the same order on every rank: from several threads, the program orders them (one thread
 * at a time, or a communicator per thread). A collective call made while another thread's
 * collective call on the same communicator has not returned is refused with
 * braidInvalidUsage and fails the communicator on every rank (its calls could not be matched).
 * Sends and receives are matched per peer and direction, in call order, and may be made from
 * several threads at once. braidCommAbort may be called from any thread at any time. */
#ifndef BRAID_BRAID_H_
#define BRAID_BRAID_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define BRAID_MAJOR 0
#define BRAID_MINOR 2
#define BRAID_PATCH 0
/* braidGetVersion returns BRAID_VERSION_CODE: major*10000 + minor*100 + patch. */
#define BRAID_VERSION_CODE (BRAID_MAJOR * 10000 + BRAID_MINOR * 100 + BRAID_PATCH)

#if defined(__GNUC__)
#define BRAID_API __attribute__((visibility("default")))
#else
#define BRAID_API
#endif

typedef enum {
  braidSuccess = 0,
  braidUnhandledError = 1,
  braidSystemError = 2,
  braidInternalError = 3,
  braidInvalidArgument = 4,
  braidInvalidUsage = 5,
  braidRemoteError = 6,
  braidInProgress = 7,
  braidTimeout = 8,
  braidNumResults = 9
} braidResult_t;

typedef enum {
  braidInt8 = 0,
  braidChar = 0,
  braidUint8 = 1,
  braidInt32 = 2,
  braidInt = 2,
  braidUint32 = 3,
  braidInt64 = 4,
  braidUint64 = 5,
  braidFloat16 = 6,
  braidHalf = 6,
  braidFloat32 = 7,
  braidFloat = 7,
  braidFloat64 = 8,
  braidDouble = 8,
  braidBfloat16 = 9,
  braidNumTypes = 10
} braidDataType_t;

typedef enum {
  braidSum = 0,
  braidProd = 1,
  braidMax = 2,
  braidMin = 3,
  braidAvg = 4, /* the sum divided by the rank count once at the end (integers truncate); a
                  floating sum that overflows its type gives inf */
  braidNumOps = 5
} braidRedOp_t;

#define BRAID_UNIQUE_ID_BYTES 128
/* Root address + a random 128-bit job secret. Opaque: copy it to every rank (MPI_Bcast, a file,
 * or the text form from braidUniqueIdToString). */
typedef struct {
  char internal[BRAID_UNIQUE_ID_BYTES];
} braidUniqueId;

typedef struct braidComm* braidComm_t;
typedef struct braidStream* braidStream_t;

BRAID_API const char* braidGetErrorString(braidResult_t result);
/* The last error seen on this communicator (or, with comm NULL, by this thread): a sentence
 * naming what failed, which peer rank/host and which path. Never NULL; the text stays as it
 * was through later calls, until this thread's fourth next call of braidGetLastError. */
BRAID_API const char* braidGetLastError(braidComm_t comm);
BRAID_API braidResult_t braidGetVersion(int* version);

/* Creates a unique id; the calling process hosts the rendezvous until every rank has joined. */
BRAID_API braidResult_t braidGetUniqueId(braidUniqueId* uniqueId);
/* Text form (hex, 2*BRAID_UNIQUE_ID_BYTES chars + NUL) for env vars and files. */
BRAID_API braidResult_t braidUniqueIdToString(const braidUniqueId* uniqueId, char* buf, size_t len);
BRAID_API braidResult_t braidUniqueIdFromString(const char* str, braidUniqueId* uniqueId);

/* Blocks until every rank joined. Inside braidGroupStart/braidGroupEnd (NCCL's way of making
 * several ranks' communicators from one thread) it only checks its arguments and sets *comm
 * to NULL: the inits of the group run together at the outermost braidGroupEnd, which sets
 * each *comm and returns the first failure (the communicators made are kept). */
BRAID_API braidResult_t braidCommInitRank(braidComm_t* comm, int nranks, braidUniqueId commId,
                                          int rank);
/* Rank, size and rendezvous from the launcher's environment: BRAID_RANK/BRAID_WORLD_SIZE with
 * BRAID_UNIQUE_ID, BRAID_UNIQUE_ID_FILE or BRAID_ROOT_ADDR (+BRAID_JOB_SECRET); torchrun's
 * RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT; Open MPI's OMPI_COMM_WORLD_*; Slurm's SLURM_*.
 * Under mpirun or srun with every rank on one node, no rendezvous variable is needed. A job of
 * one rank needs none either, and a program started without any of these variables is a job
 * of one rank (as MPI_Init without mpirun). */
BRAID_API braidResult_t braidCommInitFromEnv(braidComm_t* comm);
/* Collective over comm. color < 0 (BRAID_SPLIT_NOCOLOR) gives *newcomm = NULL. */
#define BRAID_SPLIT_NOCOLOR (-1)
BRAID_API braidResult_t braidCommSplit(braidComm_t comm, int color, int key, braidComm_t* newcomm);
/* Completes the calls still queued on streams for comm (as NCCL's ncclCommDestroy does;
 * bounded by BRAID_TIMEOUT_MS; not after a failure), waits until what this rank sent has
 * arrived (a small send returns once its data is copied; a path that fails meanwhile is made
 * again, as during a call), says goodbye to the peers, frees it. comm is freed whatever it
 * returns: braidTimeout says that some of what it sent may not have arrived. */
BRAID_API braidResult_t braidCommDestroy(braidComm_t comm);
/* A child of fork() cannot use, abort or destroy communicators (or streams) created before the
 * fork: each such call returns braidInvalidUsage (the child may create its own). */
/* Fails every operation in flight on comm (from any thread) and tells the peers, then frees
 * it. With none in flight or queued, what finished calls sent still reaches the peers (it
 * leaves as braidCommDestroy does, within a second, without running queued calls). */
BRAID_API braidResult_t braidCommAbort(braidComm_t comm);
BRAID_API braidResult_t braidCommCount(const braidComm_t comm, int* count);
BRAID_API braidResult_t braidCommUserRank(const braidComm_t comm, int* rank);
BRAID_API braidResult_t braidCommGetAsyncError(braidComm_t comm, braidResult_t* asyncError);

/* One path of the multipath layer: a connection to a peer over one local NIC, one remote NIC and
 * one flow. Chunks of every transfer are sprayed over a peer's paths; a dead path's chunks are
 * re-sent on the others and the path is reconnected in the background. */
typedef enum { braidPathUp = 0, braidPathStandby = 1, braidPathDead = 2 } braidPathState_t;
typedef struct {
  int peer; /* rank at the other end */
  int path; /* index among that peer's paths */
  braidPathState_t state;
  char transport[8];                           /* "tcp" */
  char local[64];                              /* local interface and address */
  char remote[64];                             /* the peer's address */
  unsigned long long bytesSent, bytesReceived; /* wire bytes, headers included */
  unsigned long long chunksSent, chunksReceived;
  unsigned long long retransmits;  /* chunks that were outstanding here when it died */
  unsigned long long failures;     /* times it was declared dead */
  unsigned long long readmissions; /* times it came back */
  unsigned long long rehashes;     /* times it moved to a new flow (source port) as it lagged */
} braidPathStats_t;
/* Fills up to capacity entries (stats may be NULL with capacity 0) and sets *count to the number
 * of paths: call once for the count, then with an array. Any thread, any time. Shared-memory
 * peers have no paths. */
BRAID_API braidResult_t braidCommGetPathStats(braidComm_t comm, braidPathStats_t* stats,
                                              int capacity, int* count);

/* Registers [buff, buff + size) with the communicator's RDMA transports, as NCCL's
 * ncclCommRegister: sends and receives above BRAID_EAGER_BYTES whose buffers lie inside
 * registered ranges on both ranks then move without copies (RDMA WRITE from one user buffer into
 * the other). The memory must stay allocated until braidCommDeregister; unregistered memory
 * works as well, through the transports' own buffers. *handle is NULL where no transport needs
 * registration (deregistering NULL is a no-op); a handle not returned on this communicator, or
 * deregistered already, is refused (braidInvalidArgument). Any thread. */
BRAID_API braidResult_t braidCommRegister(braidComm_t comm, void* buff, size_t size, void** handle);
BRAID_API braidResult_t braidCommDeregister(braidComm_t comm, void* handle);

/* Streams: operations enqueued on a stream run in order, asynchronously to the caller. A NULL
 * stream means: run now, return when complete. */
BRAID_API braidResult_t braidStreamCreate(braidStream_t* stream);
BRAID_API braidResult_t braidStreamDestroy(braidStream_t stream);
/* Waits for every operation enqueued so far; returns the first error among them (and clears it). */
BRAID_API braidResult_t braidStreamSynchronize(braidStream_t stream);
/* braidInProgress while work is pending, otherwise as braidStreamSynchronize. */
BRAID_API braidResult_t braidStreamQuery(braidStream_t stream);

BRAID_API braidResult_t braidAllReduce(const void* sendbuff, void* recvbuff, size_t count,
                                       braidDataType_t datatype, braidRedOp_t op, braidComm_t comm,
                                       braidStream_t stream);
BRAID_API braidResult_t braidBroadcast(const void* sendbuff, void* recvbuff, size_t count,
                                       braidDataType_t datatype, int root, braidComm_t comm,
                                       braidStream_t stream);
BRAID_API braidResult_t braidReduce(const void* sendbuff, void* recvbuff, size_t count,
                                    braidDataType_t datatype, braidRedOp_t op, int root,
                                    braidComm_t comm, braidStream_t stream);
BRAID_API braidResult_t braidAllGather(const void* sendbuff, void* recvbuff, size_t sendcount,
                                       braidDataType_t datatype, braidComm_t comm,
                                       braidStream_t stream);
BRAID_API braidResult_t braidReduceScatter(const void* sendbuff, void* recvbuff, size_t recvcount,
                                           braidDataType_t datatype, braidRedOp_t op,
                                           braidComm_t comm, braidStream_t stream);
BRAID_API braidResult_t braidAllToAll(const void* sendbuff, void* recvbuff, size_t count,
                                      braidDataType_t datatype, braidComm_t comm,
                                      braidStream_t stream);
/* Counts and displacements in elements, one per rank. Receive blocks of different peers must
 * not overlap (refused: which one lands would depend on timing). */
BRAID_API braidResult_t braidAllToAllv(const void* sendbuff, const size_t* sendcounts,
                                       const size_t* sdispls, void* recvbuff,
                                       const size_t* recvcounts, const size_t* rdispls,
                                       braidDataType_t datatype, braidComm_t comm,
                                       braidStream_t stream);
BRAID_API braidResult_t braidSend(const void* sendbuff, size_t count, braidDataType_t datatype,
                                  int peer, braidComm_t comm, braidStream_t stream);
BRAID_API braidResult_t braidRecv(void* recvbuff, size_t count, braidDataType_t datatype, int peer,
                                  braidComm_t comm, braidStream_t stream);
BRAID_API braidResult_t braidBarrier(braidComm_t comm, braidStream_t stream);

/* Operations issued between braidGroupStart and braidGroupEnd (on this thread) are fused and
 * progress together, in no set order between them; they start at braidGroupEnd. Groups nest.
 * So no operation of a group may read or write a buffer that another one of the same group
 * writes (its result would depend on timing and transport, as with NCCL). A call refused
 * inside a group (bad argument) makes braidGroupEnd return that error and run nothing of the
 * group, as NCCL's does; a communicator with other calls in the group then fails (its peers
 * expected them and are told why at once). */
BRAID_API braidResult_t braidGroupStart(void);
BRAID_API braidResult_t braidGroupEnd(void);
/* Marks this thread's open group as failed, as a refused call would: its outermost
 * braidGroupEnd then runs nothing of it and returns braidInvalidUsage with `why` (may be
 * NULL; or, when a call of the group was refused before, that call's error), and
 * communicators with calls in it fail for good, telling their peers. For a program that
 * leaves a group on an error of its own between its calls (braid.hpp's Group does when an
 * exception leaves its scope). braidInvalidUsage outside a group. */
BRAID_API braidResult_t braidGroupAbandon(const char* why);

#ifdef __cplusplus
}
#endif

#endif /* BRAID_BRAID_H_ */
