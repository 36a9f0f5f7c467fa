defmodule Locker.NotStartedError do
  @moduledoc """
  Raised by the functions of `Locker` that need the `locker` server
  (`Locker.lock/4`, `Locker.acquire/2`, `Locker.Registry.register_name/2`
  and the others that talk to the masters) when it never started on this
  node: the `:locker` application is not started, or was started with
  `autostart: false` and no `{Locker, opts}` child yet. The Erlang API
  raises `error({locker, not_started})` with an error_info saying the same.
  """

  defexception node: nil

  @impl true
  def message(%{node: node}) do
    "locker is not started on #{inspect(node)}: start the :locker application " <>
      "(or, with autostart: false, the {Locker, opts} child) first"
  end
end
