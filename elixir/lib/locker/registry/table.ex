defmodule Locker.Registry.Table do
  @moduledoc """
  Owns the ETS table in which `Locker.Registry.Keeper` mirrors the names it
  watches (name, owner, validity, policy), so that a keeper restarted by
  its supervisor adopts them: it monitors their owners again and keeps
  enforcing their deadlines, instead of leaving owners running with names
  nobody extends. Started by the `locker` application before the keeper;
  it does nothing else, so it does not crash.
  """

  use GenServer

  @doc "The name of the ETS table (a public named table)."
  @spec name() :: atom()
  def name, do: __MODULE__

  @doc "Starts the owner of the table, registered locally as `Locker.Registry.Table`."
  @spec start_link(term()) :: GenServer.on_start()
  def start_link(_arg \\ []), do: GenServer.start_link(__MODULE__, [], name: __MODULE__)

  @impl true
  def init([]) do
    _ = :ets.new(__MODULE__, [:set, :public, :named_table])
    {:ok, nil}
  end
end
