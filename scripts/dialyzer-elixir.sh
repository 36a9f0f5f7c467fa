#!/bin/sh
# Dialyzer on the Mix build of `locker` (Elixir modules, the Erlang ones
# they call, and the test support modules), with Debian's dialyzer and no
# Hex package. The PLT (erts, kernel, stdlib, compiler, crypto, Elixir and
# its Logger) is built once per OTP/Elixir version under _build/plt.
set -eu
cd "$(dirname "$0")/.."

MIX_ENV=test mix compile --warnings-as-errors >/dev/null

# Elixir's own ebin dirs, and versions for the PLT's name.
eval "$(elixir -e '
  IO.puts("elixir_ebin=#{:code.lib_dir(:elixir, :ebin)}")
  IO.puts("logger_ebin=#{:code.lib_dir(:logger, :ebin)}")
  IO.puts("versions=otp#{System.otp_release()}-elixir#{System.version()}")
')"

plt="_build/plt/locker-elixir-$versions.plt"
# Dialyzer reads Elixir's debug info through Elixir's own modules.
export ERL_FLAGS="-pa $elixir_ebin"

if [ ! -f "$plt" ]; then
  mkdir -p _build/plt
  echo "building $plt (once)"
  dialyzer --build_plt --output_plt "$plt.tmp" \
    --apps erts kernel stdlib compiler crypto "$elixir_ebin" "$logger_ebin" || [ $? -eq 2 ]
  mv "$plt.tmp" "$plt"
fi

dialyzer --plt "$plt" --no_check_plt \
  -Wunmatched_returns -Werror_handling -Wunknown \
  _build/mix/test/lib/locker/ebin
