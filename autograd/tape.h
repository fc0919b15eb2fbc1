// The tape: one Node per recorded op. A node owns its inputs (strong references,
// so the graph stays alive as long as an output does), knows its outputs weakly,
// keeps the tensors its backward needs together with their version at save time,
// and holds the backward function.
//
// Contract of a backward function: it receives one gradient per output (zeros
// where nothing flowed) and one gradient *buffer* per input: a defined, correctly
// shaped tensor for every input that requires grad (already holding whatever was
// accumulated before), undefined otherwise. It must ADD its contribution into
// those buffers, never overwrite them — with one exception an op can opt into:
// when it sets writes_fresh_grads, a buffer that did not exist before this
// node comes new and NOT zeroed (NaN under poisoning, in the tests), flagged by
// grad_is_fresh(i), and the backward must then WRITE every element of it. That
// saves a zero-fill and a read per gradient on the first contribution; later
// contributions still add.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "autograd/tensor.h"

namespace echo {

struct Node;
using BackwardFn = std::function<void(Node& node, const std::vector<Tensor>& grad_outputs,
                                      std::vector<Tensor>& grad_inputs)>;

struct Node {
  std::string name;
  std::vector<Tensor> inputs;
  std::vector<std::weak_ptr<TensorImpl>> outputs;
  std::vector<Shape> output_shapes;
  std::vector<DType> output_dtypes;
  std::vector<Device> output_devices;
  BackwardFn backward;
  bool writes_fresh_grads = false;  // set by the op at record time (see the contract above)
  std::vector<char> fresh_grad;     // per input, set by the tape before backward
  bool grad_is_fresh(size_t i) const { return i < fresh_grad.size() && fresh_grad[i]; }

  // Saved tensors; saved(i) throws if the tensor was written in place since.
  const Tensor& saved(size_t i) const;
  std::vector<Tensor> saved_tensors;
  std::vector<int64_t> saved_versions;

  void release();  // drop everything (after backward)
};

// True when grad mode is on and any of the tensors requires grad.
bool any_requires_grad(std::initializer_list<const Tensor*> tensors);
bool any_requires_grad(const std::vector<Tensor>& tensors);
bool grad_enabled();

// Records a node: outputs get grad_fn and requires_grad. Call only when
// any_requires_grad(inputs) is true. Undefined inputs are allowed (optional inputs).
// Returns the node (to set writes_fresh_grads).
Node& record(const std::string& name, const std::vector<Tensor>& inputs,
             const std::vector<Tensor>& outputs, const std::vector<Tensor>& saved,
             BackwardFn backward);
// In a backward that honours fresh buffers: zero buffer i if it is fresh, for a
// path that can only add.
void zero_if_fresh(const Node& node, std::vector<Tensor>& grad_inputs, size_t i);

// RAII guard that turns recording off (inference, optimizer updates, backward).
class NoGrad {
 public:
  NoGrad();
  ~NoGrad();
  NoGrad(const NoGrad&) = delete;
  NoGrad& operator=(const NoGrad&) = delete;

 private:
  bool previous_;
};

// Reverse pass over the graph that produced `roots`, seeded with `seeds`.
void run_backward(const std::vector<Tensor>& roots, const std::vector<Tensor>& seeds);

// Per-op wall time, off unless enabled (`echo-lm bench step --profile`). A
// forward op is charged the host time from the previous mark or record() to its
// own record() (its arithmetic and whatever model code ran just before it); a
// backward op the time of its backward function. The tape's zero-filling of
// fresh gradient buffers is charged to "(zero gradient buffers)". On CUDA these
// are host times of asynchronous launches, not kernel times.
struct OpTimes {
  double forward_s = 0, backward_s = 0;
  int64_t forward_calls = 0, backward_calls = 0;
};
void op_profile_enable(bool on);
void op_profile_mark();                           // the next forward interval starts now
void op_profile_add(const std::string& name, double forward_s, double backward_s);  // time spent outside ops
std::map<std::string, OpTimes> op_profile_take();  // the times so far; resets them

}  // namespace echo
