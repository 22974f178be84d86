#!/usr/bin/env bash
# Builds the GPU binaries on the dev machine (portable CPU code, sm_90a + sm_90) and packs what
# tools/gpu_session.sh needs into .gpu/ (git-ignored): binaries, libfmt, stories260K.
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DFARSIGHT_NATIVE=OFF \
  "-DCMAKE_CUDA_ARCHITECTURES=90a-real;90-real" >/dev/null
cmake --build build-gpu --target farsight test_gpu -j"$(nproc)"
rm -rf .gpu && mkdir -p .gpu/bin .gpu/lib .gpu/shared/models .gpu/shared/testdata
cp build-gpu/farsight build-gpu/tests/test_gpu .gpu/bin/
xz -T2 -3 -f .gpu/bin/farsight .gpu/bin/test_gpu  # the carry limit is 64 MiB; gpu_session.sh unpacks
# shared libraries the GPU image may lack (Debian builds of fmt, cpp-httplib and its deps)
for l in libfmt.so.9 libcpp-httplib.so.0.11 libssl.so.3 libcrypto.so.3 libbrotlidec.so.1 libbrotlienc.so.1 libbrotlicommon.so.1; do
  cp -L /usr/lib/x86_64-linux-gnu/$l .gpu/lib/
done
cp -r ../shared/models/stories260K .gpu/shared/models/
cp ../shared/testdata/stories260K_golden.json .gpu/shared/testdata/
# tokenizer + template fixtures are regenerated there with that machine's transformers
tar -C ../shared -cJf .gpu/shared_text.tar.xz ${GPU_PACK_TEXT:-tokenizers/llama3}
mkdir -p .gpu/shared/models/docs-27M
cp ../shared/models/docs-27M/{tokenizer.json,tokenizer_config.json,chat_template.jinja,generation_config.json,config.json} .gpu/shared/models/docs-27M/
git rev-parse --short HEAD > .gpu/commit
du -sh .gpu
