/* The launch model of CUDA mapped onto this CPU, so that `bodies.cuh` compiles as host C.
 *
 * Every kernel in `bodies.cuh` visits its work items with a grid-stride loop (`BN_FOR_EACH`):
 * `gid` starts at `blockIdx.x * blockDim.x + threadIdx.x` and steps by `gridDim.x * blockDim.x`.
 * Here the launch is one block of one thread, so that loop visits every item in order: the same
 * per-item bodies run on the CPU, one item after another. Only the launch, the memory and the
 * streams are left for a GPU to check.
 *
 * `__device__` and `__global__` mean nothing on the host; device functions become `static inline`
 * and kernels plain external functions (the engine calls them through `host.rs`). */
#ifndef BN_HOST_LAUNCH_H
#define BN_HOST_LAUNCH_H

#include <math.h>
#include <string.h>

#define __device__
#define __global__
#define __forceinline__ inline

typedef struct {
    unsigned x;
} bn_dim3;

static const bn_dim3 blockIdx = {0};
static const bn_dim3 threadIdx = {0};
static const bn_dim3 blockDim = {1};
static const bn_dim3 gridDim = {1};

#endif
