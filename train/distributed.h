// Data-parallel training over several processes (spec §6.6, docs/distributed.md).
//
// `mpirun -np N echo-lm train …` starts N ranks. Every rank builds the same
// model from the same seed and draws the same global batch from the same data
// stream; rank r trains on rows [r·B/N, (r+1)·B/N) of it. With n_r the scored
// targets of rank r's rows and n = Σ n_r, the one-process loss is
//   L = (1/n) Σ_all ce = Σ_r (n_r/n) · L_r,   L_r = (1/n_r) Σ_{rows of r} ce,
// so each rank back-propagates w_r·L_r with w_r = n_r/n (take_share) and the
// all-reduced SUM of the ranks' gradients is exactly the gradient of L — the
// same mathematics as one process, summed in a different order (float32
// rounding). Clipping, the non-finite guard and AdamW then run on identical
// buffers on every rank, so the parameters stay identical without broadcasts.
//
// Without mpirun (or in a build without MPI) the process is rank 0 of 1 and
// every hook below is a no-op, so the trainer has one code path.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "autograd/tensor.h"
#include "data/tasks.h"
#include "train/optimizer.h"

namespace echo::dist {

// Starts MPI when the launcher's environment says this process is one of its
// ranks; otherwise MPI is never touched. Call first thing in main().
void init(int* argc, char*** argv);
// Leaves MPI after a successful run (no-op when not started).
void finalize();

bool active();      // started by an MPI launcher (even with one rank)
int rank();         // 0 when not active
int size();         // 1 when not active
int local_rank();   // rank among the ranks of this machine (picks the GPU)
inline bool is_root() { return rank() == 0; }

// Ends the whole job after an error on this rank (size() > 1). Rank 0 prints
// the one-line reason and aborts the job; another rank sends its reason to
// rank 0, which prints it as "echo-lm: rank R: reason" and aborts the job
// (the rank prints and aborts by itself if rank 0 does not within 30 s).
[[noreturn]] void fail(const std::string& message);

// ---- trainer hooks -------------------------------------------------------------

// Throws unless the global batch divides evenly among the ranks.
void check_global_batch(int64_t batch);

// On CUDA: one GPU per rank, GPU (local rank mod GPUs on the machine). Call
// before any CUDA work.
void select_device();

struct Share {
  Batch batch;         // this rank's rows of the global batch
  double weight = 1;   // n_r / n: scored targets of these rows over the batch's
};
// This rank's rows of a global batch (the whole batch, weight 1, on one rank).
Share take_share(const Batch& global);

// Sums every gradient over the ranks, in place (weights were applied before
// backward, so the sum is the global mean). Gradients are packed into a few
// large buckets, one collective each: MPI_Allreduce on the CPU, ncclAllReduce
// on CUDA tensors (or through host memory where NCCL cannot be used).
void all_reduce_gradients(const std::vector<ParamRef>& params);

// The step's control values, identical on every rank: loss = Σ_r of the
// given (weighted) losses summed in rank order, finite = every rank's flag,
// grad_norm = rank 0's, interrupted = any rank's.
struct Agreement {
  double loss = 0;
  bool finite = true;
  double grad_norm = 0;
  bool interrupted = false;
};
Agreement agree(double loss, bool finite, double grad_norm, bool interrupted);

// Bytes all-reduced per step for these parameters (every gradient, f32).
int64_t gradient_bytes(const std::vector<ParamRef>& params);

}  // namespace echo::dist
