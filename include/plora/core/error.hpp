#pragma once
// plora's one error family. Every failure a user can cause (bad files, wrong
// shapes, invalid hyper-parameters, non-finite training state) throws a
// plora::Error whose message names the object at fault and what was expected.
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace plora {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// A tensor or matrix shape disagrees with what an operation needs.
class ShapeError : public Error {
 public:
  using Error::Error;
};

/// A hyper-parameter or argument is outside its valid range.
class ValueError : public Error {
 public:
  using Error::Error;
};

/// A file is missing, unreadable or malformed.
class IoError : public Error {
 public:
  using Error::Error;
};

/// NaN or Inf appeared in a parameter, a gradient or a loss.
class NumericError : public Error {
 public:
  using Error::Error;
};

namespace detail {
template <class... Parts>
std::string concat(Parts&&... parts) {
  std::ostringstream out;
  (out << ... << std::forward<Parts>(parts));
  return out.str();
}
}  // namespace detail

/// Throws `ErrorType` with the streamed parts as message when `condition` is false.
template <class ErrorType = Error, class... Parts>
inline void check(bool condition, Parts&&... parts) {
  if (!condition) throw ErrorType(detail::concat(std::forward<Parts>(parts)...));
}

/// f(), with an `ErrorType` it throws rethrown as "`context`: <its message>":
/// e.g. a config that cannot build a model, named by the checkpoint it came from.
template <class ErrorType, class F>
decltype(auto) in_context(const std::string& context, F&& f) {
  try {
    return std::forward<F>(f)();
  } catch (const ErrorType& error) {
    throw ErrorType(context + ": " + error.what());
  }
}

}  // namespace plora
