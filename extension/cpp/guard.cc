// promduck: the calls into DuckDB's C API that can throw a C++ exception, each made
// inside a try/catch, so that no exception ever unwinds into Rust frames (it would
// abort the host process: "Rust cannot catch foreign exceptions").
//
// DuckDB's C API does not catch everywhere: writing a string into an output vector
// allocates in the vector's string heap and throws `OutOfMemoryException` under
// `memory_limit`; reserving a list's child vector throws the same. Rust passes the
// function pointer it got from DuckDB's API struct and the arguments; the call is
// made here, and an exception becomes a return code and its message.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <stdexcept>

namespace {

void describe(const char *what, char *err, std::size_t cap) {
    if (cap == 0) {
        return;
    }
    std::size_t n = std::strlen(what);
    if (n >= cap) {
        n = cap - 1;
    }
    std::memcpy(err, what, n);
    err[n] = '\0';
}

template <typename F> int contain(F &&call, char *err, std::size_t cap) noexcept {
    try {
        call();
        return 0;
    } catch (const std::exception &e) {
        describe(e.what(), err, cap);
        return 1;
    } catch (...) {
        describe("an unknown C++ exception", err, cap);
        return 1;
    }
}

} // namespace

extern "C" {

typedef void (*promduck_assign_string_fn)(void *vector, std::uint64_t row, const char *str,
                                          std::uint64_t len);
typedef unsigned int (*promduck_list_size_fn)(void *vector, std::uint64_t size);

int promduck_guard_assign_string(promduck_assign_string_fn f, void *vector, std::uint64_t row,
                                 const char *str, std::uint64_t len, char *err,
                                 std::size_t cap) noexcept {
    return contain([&] { f(vector, row, str, len); }, err, cap);
}

int promduck_guard_list_size(promduck_list_size_fn f, void *vector, std::uint64_t size,
                             unsigned int *state, char *err, std::size_t cap) noexcept {
    return contain([&] { *state = f(vector, size); }, err, cap);
}

// For the tests: a C++ exception thrown where DuckDB would throw one.
void promduck_guard_test_throw(void *, std::uint64_t, const char *, std::uint64_t) {
    throw std::runtime_error("{\"exception_type\":\"Out of Memory\",\"exception_message\":\"test\"}");
}
}
