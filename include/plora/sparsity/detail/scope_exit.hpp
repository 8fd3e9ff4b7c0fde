#pragma once
// Runs a cleanup when a scope ends, normally or by an exception: the
// extractors use it to restore a weight and switch dL/dW off again, so a
// failed extraction never leaves the caller's model modified.
#include <utility>

namespace plora::detail {

template <class F>
class ScopeExit {
 public:
  explicit ScopeExit(F cleanup) : cleanup_(std::move(cleanup)) {}
  ScopeExit(const ScopeExit&) = delete;
  ScopeExit& operator=(const ScopeExit&) = delete;
  ~ScopeExit() { cleanup_(); }

 private:
  F cleanup_;
};

}  // namespace plora::detail
