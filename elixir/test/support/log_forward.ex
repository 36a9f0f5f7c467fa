defmodule LockerTest.LogForward do
  @moduledoc false
  # A :logger handler for peers: sends each event, formatted, to the
  # process in its config as `{:peer_log, node(), level, text}`.

  @doc "Adds the handler on the calling node; events go to `to`."
  def add(to) do
    id = :"locker_test_fwd_#{System.unique_integer([:positive])}"
    :logger.add_handler(id, __MODULE__, %{config: %{to: to}})
  end

  @doc false
  def log(%{level: level, msg: msg}, %{config: %{to: to}}) do
    text =
      case msg do
        {:string, s} -> IO.chardata_to_string(s)
        {:report, r} -> inspect(r)
        {format, args} -> IO.chardata_to_string(:io_lib.format(format, args))
      end

    send(to, {:peer_log, node(), level, text})
    :ok
  end
end
