defmodule Locker.Registry.Resolver do
  @moduledoc """
  Resolves `Locker.Registry` names on a node that is neither a master nor
  a replica (its `locker` store holds no names), for
  `Locker.Registry.whereis_name/1` and so for `send/2` and calls by
  `{:via, Locker.Registry, name}`. Started by the `locker` application on
  every node, registered locally as `Locker.Registry.Resolver`; idle on
  masters and replicas.

  ## How

  A name missing from the cache is asked of a master: in one message
  burst to that master's `locker` server, first `{wait_for_release, Name,
  60000}` (the master answers when the name is released or expires, or at
  once if it holds nothing), then `{wait_for, Name, 0}` (answers at once
  with the value if there is one). The server handles them in that order,
  so when the value comes back, the master is already watching that very
  lease: any release or expiry after the read is reported. The owner is
  then cached (an ETS lookup for the next callers) and monitored. A cached
  owner is dropped:

    * when it dies (its `DOWN`); a cached pid of this node is also checked
      with `Process.alive?/1` on every lookup, so a dead local owner is
      never returned;
    * when the master reports the name released or expired;
    * when that master's `locker` goes down or the connection to it drops;
    * 50 s after it was cached (before the master's watch times out).

  ## Cost

    * A lookup of a cached name: one ETS lookup (plus `Process.alive?/1`
      for a local pid), as on a master.
    * A lookup of a name not cached: a call to this process and one round
      trip to a master (the two requests travel together). Callers
      looking up the same name at once share one round trip.
    * Names nobody holds are not cached: each lookup of one costs a round
      trip.
    * Each cached name costs a waiter on one master's `locker` server, a
      monitor here, and a refresh every 50 s while it is used; at most
      10,000 names are cached (beyond, lookups are answered uncached).
    * A master that does not answer within 5 s makes the lookup answer
      `:undefined`; a master found down is replaced by another at once.

  The answers are dirty reads of a master, as on the masters themselves:
  a name registered the moment after the read is not seen, and a remote
  owner that has just died may be returned until its `DOWN` or its
  release arrives (whichever comes first; the `DOWN` comes straight from
  the owner's node).
  """

  use GenServer

  @table __MODULE__
  @wait_ms 60_000
  @keep_ms 50_000
  @call_timeout 5_000
  @max_entries 10_000

  defstruct entries: %{}, mons: %{}, pending: %{}, tags: %{}, masters: %{}

  @doc "Starts the resolver, registered locally as `Locker.Registry.Resolver`."
  @spec start_link(term()) :: GenServer.on_start()
  def start_link(_arg \\ []), do: GenServer.start_link(__MODULE__, [], name: __MODULE__)

  @doc """
  The owner of `name` as a master sees it, from the cache when it is
  there: a pid or `:undefined` (also when no master answers in time).
  """
  @spec whereis(term()) :: pid() | :undefined
  def whereis(name) do
    case lookup(name) do
      {:ok, pid} when node(pid) == node() -> if Process.alive?(pid), do: pid, else: :undefined
      {:ok, pid} -> pid
      :miss -> resolve(name)
    end
  end

  @doc "The names cached on `node`, with their owners (for operators and tests)."
  @spec cached(node()) :: [{term(), pid()}]
  def cached(node \\ node()), do: GenServer.call({__MODULE__, node}, :cached)

  defp lookup(name) do
    case :ets.lookup(@table, name) do
      [{^name, pid}] -> {:ok, pid}
      [] -> :miss
    end
  rescue
    ArgumentError -> :miss
  end

  defp resolve(name) do
    case GenServer.call(__MODULE__, {:resolve, name}, @call_timeout + 1000) do
      pid when is_pid(pid) -> pid
      _ -> :undefined
    end
  catch
    # No resolver (the application is not running) or a stuck master.
    :exit, _ -> uncached(name)
  end

  defp uncached(name) do
    case :locker.master_dirty_read(name) do
      {:ok, value} -> Locker.Registry.owner_pid(value)
      _ -> :undefined
    end
  catch
    _, _ -> :undefined
  end

  @impl true
  def init([]) do
    _ = :ets.new(@table, [:set, :protected, :named_table, read_concurrency: true])
    {:ok, %__MODULE__{}}
  end

  @impl true
  def handle_call({:resolve, name}, from, state) do
    case state.entries do
      %{^name => %{pid: pid}} ->
        {:reply, pid, state}

      _ ->
        case state.pending do
          %{^name => p} ->
            pending = Map.put(state.pending, name, %{p | callers: [from | p.callers]})
            {:noreply, %{state | pending: pending}}

          _ ->
            {:noreply, ask(state, name, [from], [])}
        end
    end
  end

  def handle_call(:cached, _from, state) do
    {:reply, for({name, %{pid: pid}} <- state.entries, do: {name, pid}), state}
  end

  @impl true
  # A reply of a master's server: `{Tag, Reply}`.
  def handle_info({tag, reply}, state) when is_reference(tag) do
    case Map.pop(state.tags, tag) do
      {nil, _} -> {:noreply, state}
      {{name, kind}, tags} -> {:noreply, on_reply(%{state | tags: tags}, name, kind, tag, reply)}
    end
  end

  def handle_info({:DOWN, ref, :process, {:locker, master}, _reason}, state) do
    case state.masters do
      %{^master => ^ref} -> {:noreply, master_down(state, master)}
      _ -> {:noreply, state}
    end
  end

  def handle_info({:DOWN, ref, :process, _pid, _reason}, state) do
    case state.mons do
      %{^ref => name} -> {:noreply, evict(state, name)}
      _ -> {:noreply, state}
    end
  end

  def handle_info({:expire, name, wtag}, state) do
    case state.entries do
      %{^name => %{wtag: ^wtag}} -> {:noreply, evict(state, name)}
      _ -> {:noreply, state}
    end
  end

  def handle_info({:ask_timeout, name, wtag}, state) do
    case state.pending do
      %{^name => %{wtag: ^wtag} = p} -> {:noreply, answer(state, name, p, :undefined)}
      _ -> {:noreply, state}
    end
  end

  def handle_info(_msg, state), do: {:noreply, state}

  # Sends the watch and the read of `name` to a master not tried yet.
  defp ask(state, name, callers, tried) do
    case pick_master(name, tried) do
      nil ->
        Enum.each(callers, &GenServer.reply(&1, :undefined))
        state

      master ->
        state = monitor_master(state, master)
        server = {:locker, master}
        wtag = make_ref()
        rtag = make_ref()
        Kernel.send(server, {:"$gen_call", {self(), wtag}, {:wait_for_release, name, @wait_ms}})
        Kernel.send(server, {:"$gen_call", {self(), rtag}, {:wait_for, name, 0}})
        _ = Process.send_after(self(), {:ask_timeout, name, wtag}, @call_timeout)

        p = %{callers: callers, master: master, wtag: wtag, rtag: rtag, tried: [master | tried]}
        tags = state.tags |> Map.put(wtag, {name, :wait}) |> Map.put(rtag, {name, :read})
        %{state | pending: Map.put(state.pending, name, p), tags: tags}
    end
  end

  defp pick_master(name, tried) do
    # The masters of the name's group (cluster mode), else of the cluster.
    masters = :locker.masters_of(name)
    connected = MapSet.new(Node.list(:connected))

    case Enum.reject(masters, &(&1 in tried)) do
      [] ->
        nil

      left ->
        # Connected masters first; among them, one per name (spreads the
        # waiters over the masters).
        {up, down} = Enum.split_with(left, &MapSet.member?(connected, &1))
        candidates = if up != [], do: up, else: down
        Enum.at(candidates, :erlang.phash2(name, length(candidates)))
    end
  catch
    :throw, {:locker, :no_such_meta_key} -> nil
    :error, {:locker, :not_started} -> nil
  end

  defp monitor_master(state, master) do
    case state.masters do
      %{^master => _} -> state
      _ -> %{state | masters: Map.put(state.masters, master, Process.monitor({:locker, master}))}
    end
  end

  defp on_reply(state, name, :wait, wtag, _released) do
    case state.pending do
      # Released, expired or absent before the read: nobody holds it now
      # (the read, handled after, is not waited for: it would not answer
      # for a name still absent).
      %{^name => %{wtag: ^wtag} = p} ->
        answer(state, name, p, :undefined)

      _ ->
        case state.entries do
          %{^name => %{wtag: ^wtag}} -> evict(state, name)
          _ -> state
        end
    end
  end

  defp on_reply(state, name, :read, rtag, reply) do
    case state.pending do
      %{^name => %{rtag: ^rtag} = p} ->
        case reply do
          {:ok, value} -> answer(state, name, p, Locker.Registry.owner_pid(value))
          _ -> answer(state, name, p, :undefined)
        end

      _ ->
        state
    end
  end

  # Replies to the callers; caches a pid while the master's watch stands.
  defp answer(state, name, p, result) do
    Enum.each(p.callers, &GenServer.reply(&1, result))
    state = %{state | pending: Map.delete(state.pending, name)}
    watching? = Map.has_key?(state.tags, p.wtag)

    if is_pid(result) and watching? and map_size(state.entries) < @max_entries do
      mon = Process.monitor(result)
      timer = Process.send_after(self(), {:expire, name, p.wtag}, @keep_ms)
      :ets.insert(@table, {name, result})
      entry = %{pid: result, mon: mon, wtag: p.wtag, master: p.master, timer: timer}

      %{
        state
        | entries: Map.put(state.entries, name, entry),
          mons: Map.put(state.mons, mon, name),
          tags: Map.delete(state.tags, p.rtag)
      }
    else
      # The watch's reply, if it comes, concerns nothing cached.
      %{state | tags: state.tags |> Map.delete(p.wtag) |> Map.delete(p.rtag)}
    end
  end

  defp evict(state, name) do
    case Map.pop(state.entries, name) do
      {nil, _} ->
        state

      {entry, entries} ->
        :ets.delete(@table, name)
        Process.demonitor(entry.mon, [:flush])
        _ = Process.cancel_timer(entry.timer)

        %{
          state
          | entries: entries,
            mons: Map.delete(state.mons, entry.mon),
            tags: Map.delete(state.tags, entry.wtag)
        }
    end
  end

  # A master's server is gone (or the connection): what it watched is no
  # longer watched, what was asked of it is asked of another master.
  defp master_down(state, master) do
    state = %{state | masters: Map.delete(state.masters, master)}

    state =
      for({name, %{master: ^master}} <- state.entries, do: name)
      |> Enum.reduce(state, &evict(&2, &1))

    for({name, %{master: ^master} = p} <- state.pending, do: {name, p})
    |> Enum.reduce(state, fn {name, p}, state ->
      tags = state.tags |> Map.delete(p.wtag) |> Map.delete(p.rtag)
      state = %{state | pending: Map.delete(state.pending, name), tags: tags}
      ask(state, name, p.callers, p.tried)
    end)
  end
end
