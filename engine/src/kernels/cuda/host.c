/* The CUDA kernels of `bodies.cuh` compiled for this CPU (by `engine/build.rs`, with
 * `-ffp-contract=off`): each kernel becomes a C function that runs every work item in a loop.
 * The engine calls them through `host.rs`; the tests hold them to the scalar specification. */
#include "bodies.cuh"
