#!/usr/bin/env bash
# vhdstack entry script.
#   ./run.sh demo   install what is missing, build, run the built-in demo
#   ./run.sh test   install what is missing, build twice (plain with -Werror,
#                   and ASan+UBSan), run the whole test suite in both builds,
#                   and a short fuzzing smoke run when clang is available
#   ./run.sh build  install and build only (build/)
# Needs root (or sudo) only to install Debian packages that are missing.
set -euo pipefail
cd "$(dirname "$0")"
top=$(pwd)

packages=(build-essential cmake pkg-config clang libclang-rt-14-dev
          libjson-c-dev libfuse3-dev fuse3 liburing-dev zlib1g-dev libblkid-dev
          qemu-utils python3 e2fsprogs strace util-linux bc
          libnbd-bin fio qemu-system-common dosfstools libvhdi-utils
          qemu-system-x86 busybox-static cpio fdisk mtools)

install_missing() {
	local missing=()
	for p in "${packages[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
			missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	echo "== installing: ${missing[*]}"
	local sudo=""
	[ "$(id -u)" -eq 0 ] || sudo="sudo"
	$sudo apt-get update -q
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
}

build() { # build DIR [cmake options...]
	local dir=$1
	shift
	cmake -S "$top" -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
	cmake --build "$dir" -j"$(nproc)"
}

demo() {
	build "$top/build"
	export PATH="$top/build/tools:$PATH"
	demo_dir=$(mktemp -d /tmp/vhdstack-demo.XXXXXX)
	trap 'rm -rf "$demo_dir"' EXIT
	cd "$demo_dir"
	echo "== demo in $demo_dir: a dynamic disk, a differencing child on top"
	run() { echo "\$ $*"; "$@"; echo; }
	piped() { echo "\$ echo '$1' | ${*:2}"; echo "$1" | "${@:2}"; echo; }
	run vhdtool create --type dynamic --size 1G base.vhd
	piped 'written to the base disk' vhdtool write base.vhd --offset 1M
	run vhdtool create --parent base.vhd child.vhd
	piped 'CHILD' vhdtool write child.vhd --offset 1M
	run vhdtool read child.vhd --offset 1M --length 25
	run vhdtool read base.vhd --offset 1M --length 25
	run vhdtool info child.vhd
	run vhdtool map child.vhd
	run vhdtool check child.vhd
	if command -v qemu-img >/dev/null; then
		run qemu-img info -f vpc base.vhd
	fi
}

test_all() {
	local fail=0
	export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1}
	export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
	echo "== plain build (-Werror)"
	build "$top/build-ci" -DWERROR=ON
	(cd "$top/build-ci" && ctest -j2 --output-on-failure) || fail=1
	echo "== sanitized build (ASan+UBSan, -Werror)"
	build "$top/build-asan" -DWERROR=ON -DSANITIZE=ON
	(cd "$top/build-asan" && ctest -j2 --output-on-failure) || fail=1
	if command -v clang >/dev/null; then
		echo "== fuzz smoke run (${FUZZ_SECONDS:-60} s)"
		CC=clang build "$top/build-fuzz" -DFUZZ=ON
		if [ -x "$top/build-fuzz/tests/fuzz_open" ]; then
			local corpus
			corpus=$(mktemp -d)
			cp "$top"/fixtures/fuzz/seed/* "$corpus"/ 2>/dev/null || true
			"$top/build-fuzz/tests/fuzz_open" -max_total_time="${FUZZ_SECONDS:-60}" \
				-max_len=65536 -print_final_stats=1 "$corpus" 2>&1 | tail -15 || fail=1
			rm -rf "$corpus"
		fi
		if [ -x "$top/build-fuzz/tests/fuzz_nbd" ]; then
			echo "== NBD protocol fuzz smoke run (${FUZZ_NBD_SECONDS:-30} s)"
			local corpus
			corpus=$(mktemp -d)
			find "$top/fixtures/fuzz/nbd-seed" -type f ! -name README.md -exec cp {} "$corpus"/ \;
			"$top/build-fuzz/tests/fuzz_nbd" -max_total_time="${FUZZ_NBD_SECONDS:-30}" \
				-dict="$top/tests/fuzz/fuzz_nbd.dict" -print_final_stats=1 "$corpus" 2>&1 |
				tail -15 || fail=1
			rm -rf "$corpus"
		fi
	fi
	[ $fail -eq 0 ] && echo "== all tests passed" || echo "== FAILURES (see above)"
	return $fail
}

case "${1:-}" in
demo) install_missing && demo ;;
test) install_missing && test_all ;;
build) install_missing && build "$top/build" ;;
*) sed -n '2,9p' "$0"; exit 2 ;;
esac
