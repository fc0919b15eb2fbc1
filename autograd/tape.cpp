#include "autograd/tape.h"

#include <chrono>
#include <unordered_map>
#include <unordered_set>
#include <utility>

namespace echo {

namespace {
thread_local bool g_grad_enabled = true;
}

bool grad_enabled() { return g_grad_enabled; }
NoGrad::NoGrad() : previous_(g_grad_enabled) { g_grad_enabled = false; }
NoGrad::~NoGrad() { g_grad_enabled = previous_; }

bool any_requires_grad(std::initializer_list<const Tensor*> tensors) {
  if (!g_grad_enabled) return false;
  for (const Tensor* t : tensors)
    if (t && t->defined() && t->requires_grad()) return true;
  return false;
}
bool any_requires_grad(const std::vector<Tensor>& tensors) {
  if (!g_grad_enabled) return false;
  for (const Tensor& t : tensors)
    if (t.defined() && t.requires_grad()) return true;
  return false;
}

const Tensor& Node::saved(size_t i) const {
  if (i >= saved_tensors.size())
    throw std::runtime_error("backward of " + name + ": no saved tensor " + std::to_string(i) +
                             " (the graph was already freed by an earlier backward?)");
  const Tensor& t = saved_tensors[i];
  if (t.defined() && t.version() != saved_versions[i])
    throw std::runtime_error("backward of " + name + ": saved tensor " + std::to_string(i) + " (" +
                             t.describe() + ") was modified in place after it was saved");
  return t;
}

namespace {
struct OpProfile {
  bool on = false;
  std::chrono::steady_clock::time_point mark;
  std::map<std::string, OpTimes> times;
};
OpProfile& op_profile() {
  static OpProfile p;
  return p;
}
double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}
}  // namespace

void op_profile_enable(bool on) {
  op_profile().on = on;
  op_profile_mark();
}
void op_profile_mark() { op_profile().mark = std::chrono::steady_clock::now(); }
void op_profile_add(const std::string& name, double forward_s, double backward_s) {
  OpTimes& t = op_profile().times[name];
  t.forward_s += forward_s;
  t.backward_s += backward_s;
  t.forward_calls += forward_s > 0;
  t.backward_calls += backward_s > 0;
}
std::map<std::string, OpTimes> op_profile_take() { return std::exchange(op_profile().times, {}); }

void Node::release() {
  inputs.clear();
  saved_tensors.clear();
  saved_versions.clear();
  backward = nullptr;
}

Node& record(const std::string& name, const std::vector<Tensor>& inputs,
             const std::vector<Tensor>& outputs, const std::vector<Tensor>& saved,
             BackwardFn backward) {
  if (op_profile().on) {
    OpTimes& t = op_profile().times[name];
    t.forward_s += seconds_since(op_profile().mark);
    ++t.forward_calls;
    op_profile_mark();
  }
  auto node = std::make_shared<Node>();
  node->name = name;
  node->inputs = inputs;
  for (const Tensor& o : outputs) {
    node->outputs.push_back(o.impl_ptr());
    node->output_shapes.push_back(o.shape());
    node->output_dtypes.push_back(o.dtype());
    node->output_devices.push_back(o.device());
    o.impl()->grad_fn = node;
    o.impl()->requires_grad = true;
  }
  for (const Tensor& s : saved) {
    node->saved_tensors.push_back(s);
    node->saved_versions.push_back(s.defined() ? s.version() : 0);
  }
  node->backward = std::move(backward);
  return *node;
}

void zero_if_fresh(const Node& node, std::vector<Tensor>& grad_inputs, size_t i) {
  if (grad_inputs[i].defined() && node.grad_is_fresh(i)) grad_inputs[i].fill_(0.0);
}

void run_backward(const std::vector<Tensor>& roots, const std::vector<Tensor>& seeds) {
  NoGrad no_grad;
  // Seed the roots' gradient buffers.
  for (size_t i = 0; i < roots.size(); ++i) {
    const Tensor& r = roots[i];
    if (!r.requires_grad())
      throw std::runtime_error("backward: tensor " + r.describe() + " does not require grad");
    if (seeds[i].shape() != r.shape())
      throw std::runtime_error("backward: seed " + seeds[i].describe() + " for " + r.describe());
    if (!r.grad().defined()) r.impl()->grad = Tensor::zeros(r.shape(), r.dtype(), r.device());
    r.impl()->grad.add_(seeds[i]);
  }

  // Reverse topological order by an iterative post-order DFS over nodes. The
  // order holds the nodes strongly: an intermediate tensor is often owned only by
  // its consumer's inputs, and it owns its producer node (grad_fn).
  std::vector<std::shared_ptr<Node>> order;
  std::unordered_set<Node*> visited;
  std::vector<std::pair<std::shared_ptr<Node>, size_t>> stack;
  for (const Tensor& r : roots) {
    std::shared_ptr<Node> n = r.impl()->grad_fn;
    if (!n || visited.count(n.get())) continue;
    visited.insert(n.get());
    stack.push_back({n, 0});
    while (!stack.empty()) {
      auto& [node, next] = stack.back();
      if (next < node->inputs.size()) {
        const Tensor& in = node->inputs[next++];
        std::shared_ptr<Node> child = in.defined() ? in.impl()->grad_fn : nullptr;
        if (child && !visited.count(child.get())) {
          visited.insert(child.get());
          stack.push_back({child, 0});  // may reallocate: node/next are not used after this
        }
      } else {
        order.push_back(node);
        stack.pop_back();
      }
    }
  }

  for (auto it = order.rbegin(); it != order.rend(); ++it) {
    Node* node = it->get();
    if (!node->backward)
      throw std::runtime_error("backward through " + node->name +
                               " a second time: the graph is freed after the first backward");
    const bool profiling = op_profile().on;
    const auto t_zero = std::chrono::steady_clock::now();
    std::vector<Tensor> grad_outputs;
    std::vector<std::shared_ptr<TensorImpl>> alive;
    for (size_t i = 0; i < node->outputs.size(); ++i) {
      auto out = node->outputs[i].lock();
      alive.push_back(out);
      if (out && out->grad.defined()) grad_outputs.push_back(out->grad);
      else grad_outputs.push_back(Tensor::zeros(node->output_shapes[i], node->output_dtypes[i], node->output_devices[i]));
    }
    std::vector<Tensor> grad_inputs(node->inputs.size());
    node->fresh_grad.assign(node->inputs.size(), 0);
    for (size_t i = 0; i < node->inputs.size(); ++i) {
      const Tensor& in = node->inputs[i];
      if (!in.defined() || !in.requires_grad()) continue;
      if (!in.impl()->grad.defined()) {
        // An input that appears twice (mul(x, x)) gets one buffer and two
        // contributions: the second must add, so it starts from zeros.
        bool repeated = false;
        for (size_t j = 0; j < node->inputs.size(); ++j)
          repeated |= j != i && node->inputs[j].defined() && node->inputs[j].impl() == in.impl();
        if (node->writes_fresh_grads && !repeated) {
          in.impl()->grad = Tensor::empty(in.shape(), in.dtype(), in.device());
          node->fresh_grad[i] = 1;
        } else {
          in.impl()->grad = Tensor::zeros(in.shape(), in.dtype(), in.device());
        }
      }
      grad_inputs[i] = in.impl()->grad;
    }
    const auto t_backward = std::chrono::steady_clock::now();
    node->backward(*node, grad_outputs, grad_inputs);
    if (profiling) {
      OpTimes& t = op_profile().times[node->name];
      t.backward_s += seconds_since(t_backward);
      ++t.backward_calls;
      op_profile().times["(zero gradient buffers)"].backward_s +=
          std::chrono::duration<double>(t_backward - t_zero).count();
    }
    // Intermediate gradients are not needed once their node has run.
    for (auto& out : alive)
      if (out && out->grad_fn && !out->retain_grad) out->grad = Tensor();
    // Free the saved tensors now, but keep the inputs until every node has run:
    // an input may be an intermediate owned only by this node, whose gradient
    // buffer its producer (later in the order) still has to read.
    node->saved_tensors.clear();
    node->saved_versions.clear();
    node->backward = nullptr;
  }
  for (auto& node : order) node->release();
}

}  // namespace echo
