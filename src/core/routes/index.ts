export {configureInterface, type InterfaceAddress, type IpOptions} from './interface.js'
export {addRoutes, keepEndpointOutside, parseRoutePrefix, removeRoutes, ROUTE_PROTO, type AddedRoute, type RouteOptions} from './routes.js'
