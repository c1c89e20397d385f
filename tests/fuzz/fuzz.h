/* The entry point libFuzzer calls once per input (https://llvm.org/docs/LibFuzzer.html);
 * each tests/fuzz/fuzz_*.c defines it. Declared once here so the fuzz targets build
 * under -Wmissing-prototypes like the rest of the tree. data is libFuzzer's, valid for
 * the call only; return 0. */
#ifndef OMS_TESTS_FUZZ_H
#define OMS_TESTS_FUZZ_H

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#endif
