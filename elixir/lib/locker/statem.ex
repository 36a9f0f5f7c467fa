defmodule Locker.Statem do
  @moduledoc """
  `use Locker.Statem` for a `:gen_statem` with a cluster-wide
  `Locker.Registry` name.

      defmodule Light do
        use Locker.Statem

        @impl true
        def callback_mode, do: :state_functions
        @impl true
        def init(_), do: {:ok, :off, %{}}
        def off({:call, from}, :flip, data), do: {:next_state, :on, data, [{:reply, from, :on}]}
        def on({:call, from}, :flip, data), do: {:next_state, :off, data, [{:reply, from, :off}]}
      end

      {:ok, _} = Light.start_link([], name: "light")
      :gen_statem.call({:via, Locker.Registry, "light"}, :flip)   # from any node

  It injects:

    * `start(args, opts \\\\ [])` and `start_link(args, opts \\\\ [])`: with
      `name: name` in `opts` the process is registered as
      `{:via, Locker.Registry, name}`; without it, unregistered. Other
      options go to `:gen_statem.start/4`;
    * `child_spec/1` (overridable), starting `start_link(arg)`;
    * `terminate/3`, which calls `Locker.Registry.unregister/0` (except
      when the process stops for losing its name); overridable, and
      `super/3` keeps working.

  The name is kept alive by `Locker.Registry.Keeper` (no lease message to
  handle) and released as soon as the process exits. When the keeper
  gives the name up (see `Locker.Registry`), the process gets the exit
  signal `{:shutdown, {:locker_name_lost, name}}`; a state machine that
  traps exits gets it as an `:info` event `{:EXIT, keeper, reason}`, and
  should stop with that reason: the keeper kills it half a margin later
  otherwise (`:gen_statem` has no single callback this module could add
  a clause to).
  """

  @doc false
  defmacro __using__(_opts) do
    quote location: :keep do
      @behaviour :gen_statem

      @doc "Starts the state machine, registered as `{:via, Locker.Registry, name}` with `name:` in `opts`."
      @spec start(term(), keyword()) :: :gen_statem.start_ret()
      def start(args, opts \\ []), do: Locker.Statem.start(__MODULE__, args, opts)

      @doc "Starts and links the state machine, registered as `{:via, Locker.Registry, name}` with `name:` in `opts`."
      @spec start_link(term(), keyword()) :: :gen_statem.start_ret()
      def start_link(args, opts \\ []), do: Locker.Statem.start_link(__MODULE__, args, opts)

      @doc false
      def child_spec(arg) do
        %{id: __MODULE__, start: {__MODULE__, :start_link, [arg]}}
      end

      @impl :gen_statem
      def terminate(reason, _state, _data) do
        Locker.Registry.__terminate__(reason)
      end

      defoverridable child_spec: 1, terminate: 3
    end
  end

  @doc "Starts `module` as a `:gen_statem`, named through `Locker.Registry` with `name:` in `opts`."
  @spec start(module(), term(), keyword()) :: :gen_statem.start_ret()
  def start(module, args, opts) do
    case Keyword.pop(Locker.Server.__opts__!(opts, "Locker.Statem.start/3"), :name) do
      {nil, opts} -> :gen_statem.start(module, args, opts)
      {name, opts} -> :gen_statem.start(via(name), module, args, opts)
    end
  end

  @doc "Starts and links `module` as a `:gen_statem`, named with `name:` in `opts`."
  @spec start_link(module(), term(), keyword()) :: :gen_statem.start_ret()
  def start_link(module, args, opts) do
    case Keyword.pop(Locker.Server.__opts__!(opts, "Locker.Statem.start_link/3"), :name) do
      {nil, opts} -> :gen_statem.start_link(module, args, opts)
      {name, opts} -> :gen_statem.start_link(via(name), module, args, opts)
    end
  end

  defp via(name), do: {:via, Locker.Registry, Locker.Server.unwrap(name)}
end
