// Builds against plora's public headers only and checks one real computation.
// The umbrella must compile with plora::plora alone (no io dependencies).
#include <plora/plora.hpp>

#include <cstdio>

int main() {
  plora::HostMatrix a(2, 2, {1, 2, 3, 4});
  plora::HostMatrix c(2, 2);
  plora::cpu::gemm(c.view(), a.view(), plora::Op::N, a.view(), plora::Op::T, 1.0f, 0.0f);
  // a a^T = [[5, 11], [11, 25]]
  const bool ok = c(0, 0) == 5 && c(0, 1) == 11 && c(1, 0) == 11 && c(1, 1) == 25;
  std::puts(ok ? "consumer: ok" : "consumer: wrong result");
  return ok ? 0 : 1;
}
