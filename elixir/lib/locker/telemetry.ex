defmodule Locker.Telemetry do
  @moduledoc """
  Optional `:telemetry` events. `locker` has no dependency on `:telemetry`:
  events are emitted only when the `:telemetry` module is loaded (as it is
  once the `:telemetry` application of a project that depends on it is
  started); otherwise every function here just runs the given code.

  Spans (`:telemetry.span/3`: `[..., :start]`, `[..., :stop]` and
  `[..., :exception]` with the usual `:system_time`, `:monotonic_time` and
  `:duration` measurements):

  | event prefix | metadata | stop metadata adds |
  | --- | --- | --- |
  | `[:locker, :lock]` | `:key`, `:lease` | `:result` |
  | `[:locker, :release]` | `:key` | `:result` |
  | `[:locker, :extend]` | `:key`, `:lease` | `:result` |
  | `[:locker, :acquire]` | `:key`, `:lease`, `:timeout` | `:result` (`:ok` or the error), `:token` |

  `[:locker, :lock]`, `[:locker, :release]` and `[:locker, :extend]` wrap
  `Locker.lock/4`, `Locker.release/3` and `Locker.extend_lease/3` as well
  as the lease functions `Locker.release/1` and `Locker.extend/3`.
  Values are never put in metadata (they are often pids of the caller).

  Single events (`:telemetry.execute/3`) of `Locker.Registry`:

  | event | measurements | metadata |
  | --- | --- | --- |
  | `[:locker, :registry, :register]` | `:duration` (native units) | `:name`, `:pid`, `:result` (`:yes`, `:no` when held by another, `:no_quorum` when no holder is seen but no quorum granted it) |
  | `[:locker, :registry, :unregister]` | `:duration` | `:name`, `:pid` |
  | `[:locker, :registry, :down]` | `:duration` (DOWN to release done) | `:name`, `:pid`, `:reason` (the owner's exit reason), `:result` |
  | `[:locker, :registry, :lost]` | `:remaining` (ms the masters may still hold the lease) | `:name`, `:pid`, `:reason` (`:deadline`: not extended in time; `:not_held`: held by another or by nobody), `:action` (`:exit` or `:notify`) |
  """

  # Held in an attribute so that the calls below are not checked at
  # compile time: `:telemetry` is an optional, run-time-only dependency.
  @telemetry :telemetry

  @doc "Whether events are emitted (the `:telemetry` module is loaded)."
  @spec enabled?() :: boolean()
  def enabled?, do: :erlang.module_loaded(@telemetry)

  @doc """
  Runs `fun` inside a `[:locker | suffix]` span when telemetry is enabled.
  `stop_meta` turns the result into extra stop metadata.
  """
  @spec span([atom()], map(), (() -> result), (result -> map())) :: result when result: var
  def span(suffix, meta, fun, stop_meta \\ &%{result: &1}) do
    if enabled?() do
      apply(@telemetry, :span, [
        [:locker | suffix],
        meta,
        fn ->
          result = fun.()
          {result, Map.merge(meta, stop_meta.(result))}
        end
      ])
    else
      fun.()
    end
  end

  @doc "Emits the single event `[:locker | suffix]` when telemetry is enabled."
  @spec execute([atom()], map(), map()) :: :ok
  def execute(suffix, measurements, meta) do
    if enabled?() do
      _ = apply(@telemetry, :execute, [[:locker | suffix], measurements, meta])
    end

    :ok
  end
end
