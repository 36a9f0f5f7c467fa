defmodule LockerTest.Echo do
  @moduledoc false
  # A plain GenServer, for `name: {:via, Locker.Registry, name}`.
  use GenServer

  def start(name), do: GenServer.start(__MODULE__, nil, name: {:via, Locker.Registry, name})

  def start_link(name),
    do: GenServer.start_link(__MODULE__, nil, name: {:via, Locker.Registry, name})

  @impl true
  def init(nil), do: {:ok, nil}

  @impl true
  def handle_call(:ping, _from, state), do: {:reply, {:pong, node(), self()}, state}

  @impl true
  def handle_info({:echo, to}, state) do
    send(to, {:echoed, node(), self()})
    {:noreply, state}
  end
end

defmodule LockerTest.Light do
  @moduledoc false
  # A plain :gen_statem (state functions), for the same.
  @behaviour :gen_statem

  def start(name), do: :gen_statem.start({:via, Locker.Registry, name}, __MODULE__, nil, [])

  @impl true
  def callback_mode, do: :state_functions

  @impl true
  def init(nil), do: {:ok, :off, nil}

  def off({:call, from}, :flip, data),
    do: {:next_state, :on, data, [{:reply, from, {:on, node()}}]}

  def on({:call, from}, :flip, data),
    do: {:next_state, :off, data, [{:reply, from, {:off, node()}}]}
end

defmodule LockerTest.LServer do
  @moduledoc false
  # elixir_locker's Locker.Server, as its users write it: terminate/2
  # overridden with a super call; reports to `:report` in args.
  use Locker.Server, lease_length: 1000, lease_threshold: 200

  def init(args) do
    if is_list(args) and args[:trap], do: Process.flag(:trap_exit, true)
    {:ok, args}
  end

  def handle_call(:args, _from, args), do: {:reply, args, args}

  def handle_call(:stop, from, state) do
    GenServer.reply(from, :ok)
    {:stop, :normal, state}
  end

  def handle_info({:echo, pid}, state) do
    send(pid, {:echoed, self()})
    {:noreply, state}
  end

  def terminate(reason, state) do
    result = super(reason, state)

    if is_list(state) and is_pid(state[:report]),
      do: send(state[:report], {:terminated, self(), result})

    :ok
  end
end

defmodule LockerTest.LFsm do
  @moduledoc false
  # elixir_locker's Locker.Fsm, as its users write it.
  use Locker.Fsm

  def init(args), do: {:ok, :started, args}

  def handle_sync_event(:stop, from, :started, state) do
    Locker.Fsm.reply(from, :ok)
    {:stop, :normal, state}
  end

  def handle_sync_event(:ping, _from, name, state), do: {:reply, {:pong, name}, name, state}

  def terminate(reason, state_name, state) do
    result = super(reason, state_name, state)

    if is_list(state) and is_pid(state[:report]),
      do: send(state[:report], {:terminated, self(), result})

    :ok
  end
end

defmodule LockerTest.LStatem do
  @moduledoc false
  use Locker.Statem

  @impl true
  def callback_mode, do: :handle_event_function

  @impl true
  def init(args), do: {:ok, :ready, args}

  @impl true
  def handle_event({:call, from}, :stop, _state, data),
    do: {:stop_and_reply, :normal, [{:reply, from, :ok}], data}

  def handle_event({:call, from}, :ping, state, _data),
    do: {:keep_state_and_data, [{:reply, from, {:pong, state}}]}

  @impl true
  def terminate(reason, state, data) do
    result = super(reason, state, data)

    if is_list(data) and is_pid(data[:report]),
      do: send(data[:report], {:terminated, self(), result})

    :ok
  end
end

defmodule LockerTest.TrapEcho do
  @moduledoc false
  # A plain GenServer that traps exits and ignores the keeper's signal
  # (GenServer's default handle_info/2 logs it): the keeper must kill it.
  use GenServer

  def start(name), do: GenServer.start(__MODULE__, nil, name: {:via, Locker.Registry, name})

  @impl true
  def init(nil) do
    Process.flag(:trap_exit, true)
    {:ok, nil}
  end

  @impl true
  def handle_call(:ping, _from, state), do: {:reply, {:pong, node(), self()}, state}
end
