#!/bin/sh
# Installs what a fresh Debian machine lacks to build and test locker:
# Erlang/OTP (with dev headers, eunit, common_test, dialyzer), Elixir and
# rebar3 from Debian's packages. Does nothing when they are present.
# Rust (cargo, clippy, rustfmt) is expected on the machine.
set -eu
need=""
command -v erl >/dev/null 2>&1 || need="$need erlang-nox erlang-dev"
erl_has() { erl -noshell -eval "case code:lib_dir($1) of {error, _} -> halt(1); _ -> halt(0) end." >/dev/null 2>&1; }
if command -v erl >/dev/null 2>&1; then
  erl_has eunit || need="$need erlang-eunit"
  erl_has common_test || need="$need erlang-common-test"
  erl_has dialyzer || need="$need erlang-dialyzer"
  erl_has erl_interface || need="$need erlang-dev"
else
  need="$need erlang-eunit erlang-common-test erlang-dialyzer"
fi
command -v elixir >/dev/null 2>&1 || need="$need elixir"
command -v rebar3 >/dev/null 2>&1 || need="$need rebar3"
if [ -n "$need" ]; then
  echo "ensure-toolchain: installing$need" >&2
  if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  # shellcheck disable=SC2086
  $sudo apt-get install -y -qq $need >/dev/null
fi
command -v cargo >/dev/null 2>&1 || { echo "ensure-toolchain: cargo (Rust) is required" >&2; exit 1; }
# Multi-node tests and the demo need epmd.
epmd -daemon >/dev/null 2>&1 || true
