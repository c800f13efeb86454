// The completion token every coroutine in the core uses: co_await yields (error, values...)
// instead of throwing, so that a failed read or write is an ordinary branch.
#pragma once

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace ops::core {
inline constexpr auto kAwaitTuple = boost::asio::as_tuple(boost::asio::use_awaitable);
}  // namespace ops::core
