defmodule Locker.Lease do
  @moduledoc """
  A lease taken with `Locker.acquire/2`.

    * `:key`, `:value`: what is stored in `locker` (the value is the
      acquiring process by default).
    * `:token`: the fencing token of this acquisition, strictly greater
      than any token issued before for `key` while a quorum of masters
      stayed up (see the guide, `docs/elixir.md`). Pass it to the resource
      you protect and have it reject tokens lower than one it has seen.
    * `:expires_at`: the instant, in `System.monotonic_time(:millisecond)`
      **of the node that acquired or last extended the lease**, before
      which the lease is certainly still held, barring a lost quorum: the
      moment the request was sent, plus the lease, minus a clock drift
      allowance of 1% + 2 ms (as Redlock computes validity). The masters
      count their lease from when they received the request, so they hold
      it at least this long. Monotonic clocks of different nodes are not
      comparable: `remaining/1` and `expired?/1` mean something on that
      node only.

  A lease is a plain term: any process may pass it to `Locker.release/1`
  or `Locker.extend/3`.
  """

  @enforce_keys [:key, :value, :token, :expires_at]
  defstruct [:key, :value, :token, :expires_at]

  @type t :: %__MODULE__{
          key: term(),
          value: term(),
          token: pos_integer(),
          expires_at: integer()
        }

  @doc "Milliseconds left before `expires_at` (0 once it has passed)."
  @spec remaining(t()) :: non_neg_integer()
  def remaining(%__MODULE__{expires_at: at}) when is_integer(at) do
    max(at - System.monotonic_time(:millisecond), 0)
  end

  @doc "Whether `expires_at` has passed."
  @spec expired?(t()) :: boolean()
  def expired?(%__MODULE__{} = lease), do: remaining(lease) == 0

  @doc false
  @spec validity_end(integer(), non_neg_integer()) :: integer()
  def validity_end(sent_at, lease_ms) when is_integer(sent_at) and is_integer(lease_ms),
    do: sent_at + lease_ms - (div(lease_ms, 100) + 2)
end
