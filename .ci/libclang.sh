# Sourced by .ci/run and .ci/test-libclang: whether the C library libclang itself is there.
#
# bindgen (through clang-sys, for the mpi crate) loads `libclang.so`, `libclang.so.N` or
# `libclang-N.so*`. `libclang-cpp.so.N` (the C++ interface, which llvm-N pulls in) is another
# library and does not do: a glob such as `libclang*.so*` matches it, so a machine with LLVM
# but without libclang-dev looked ready and the MPI build then failed in bindgen.

# has_libclang [DIR ...]: exit 0 when one of the DIRs (by default LLVM's and the system's
# library folders) holds libclang proper.
has_libclang() {
    local dirs=("$@")
    if [ "${#dirs[@]}" -eq 0 ]; then
        dirs=(/usr/lib/llvm-*/lib /usr/lib/*-linux-gnu /usr/lib64 /usr/lib /usr/local/lib)
    fi
    local dir file
    for dir in "${dirs[@]}"; do
        [ -d "$dir" ] || continue
        # `libclang-[0-9]*` and not `libclang-*`: the C++ interface is `libclang-cpp`.
        for file in "$dir"/libclang.so "$dir"/libclang.so.* "$dir"/libclang-[0-9]*.so*; do
            [ -e "$file" ] && return 0
        done
    done
    return 1
}
